// The storefront display's logic. Compiled into the vitrine binary (src/http/display.rs).
//
// Data comes from /api/events (Server-Sent Events): `hello` (who the daemon is), `recommendations`
// (the same JSON as /api/recommendations, sent only when what is shown changes) and `ping`.
// Rendering is keyed — shoppers by track id, garments by group, items by catalog id — so only what
// changed fades in or out. With nobody in view for a moment the page shows the attract screen.
// The connection heals itself: EventSource retries, and if the browser gives up or the stream
// goes silent, a new one is opened with backoff. A restarted daemon running a new version makes
// the page reload so it picks up the new page too.
'use strict';

(() => {
  // Every shopper gets a column and every card the same size: 6 cards across the screen, so
  // one shopper sees 6 items a row, two see 3 each, three see 2 each. More than three would not
  // be readable from the street; the nearest are shown.
  const MAX_SHOPPERS = 3;
  const CARDS_ACROSS = 6;
  const MAX_ROWS = 2;         // garment rows per shopper (3 when alone)
  const IDLE_AFTER_MS = 2500; // nobody in view this long: attract screen
  const OFFLINE_AFTER_MS = 10000; // link down this long: stop showing stale recommendations
  const SILENT_STREAM_MS = 40000; // no event at all (pings come every 15 s): reconnect
  const SHOWCASE_PAGE = 4;
  const SHOWCASE_EVERY_MS = 6000;
  const FADE_MS = 600;

  const GROUP_NAMES = {
    top: 'Tops',
    bottom: 'Bottoms',
    'full-body': 'Full looks',
    footwear: 'Shoes',
    bag: 'Bags',
  };

  const body = document.body;
  const columns = document.getElementById('columns');
  const showcaseEl = document.getElementById('showcase');

  // Read by the browser test and the render benchmark.
  const stats = (window.__vitrine = {
    events: 0,
    renders: 0,
    firstDataRenderMs: null,
    firstLiveRenderMs: null,
    boot: null,
  });

  const st = {
    es: null,
    retryMs: 1000,
    lastEventAt: 0,
    linkDownSince: Date.now(),
    lastShopperAt: 0,
    version: null,
    boot: null,
    showcase: [],
    showcaseAt: 0,
    showcaseNext: 0,
    debugTimer: null,
  };

  /** track_id → { el, rows: Map(key → { el, items: Map(id → el) }) } */
  const panels = new Map();

  function setState(s) {
    if (body.dataset.state !== s) body.dataset.state = s;
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // Fade in: start in the `enter` style, drop it on the next frames so the transition runs.
  function enter(e) {
    e.classList.add('enter');
    requestAnimationFrame(() => requestAnimationFrame(() => e.classList.remove('enter')));
  }

  // Fade out. Items and rows are taken out of the layout first (frozen where they are, on top)
  // so the ones that stay or come in take their places at once; whole shopper columns instead
  // shrink away (CSS) so the others widen smoothly.
  function leave(e) {
    if (e.classList.contains('leave')) return;
    if (!e.classList.contains('shopper') && e.parentElement) {
      const { offsetLeft: x, offsetTop: y, offsetWidth: w, offsetHeight: h } = e;
      Object.assign(e.style, {
        position: 'absolute', left: `${x}px`, top: `${y}px`, width: `${w}px`, height: `${h}px`,
      });
    }
    e.classList.add('leave');
    setTimeout(() => e.remove(), FADE_MS);
  }

  const formats = new Map();
  function price(value, currency) {
    try {
      let f = formats.get(currency);
      if (!f) {
        f = new Intl.NumberFormat(document.documentElement.lang || 'en', {
          style: 'currency',
          currency,
        });
        formats.set(currency, f);
      }
      return f.format(value);
    } catch (_) {
      return `${Number(value).toFixed(2)} ${currency}`;
    }
  }

  function groupName(g) {
    return GROUP_NAMES[g.group] || g.group.charAt(0).toUpperCase() + g.group.slice(1);
  }

  function itemCard(it, attr) {
    const fig = el('figure', 'item');
    fig.dataset[attr] = it.id;
    const box = el('div', 'img');
    const img = el('img');
    img.alt = '';
    img.decoding = 'async';
    img.src = it.image;
    img.onerror = () => { img.style.visibility = 'hidden'; };
    box.appendChild(img);
    const cap = el('figcaption');
    cap.appendChild(el('span', 'name', it.name));
    cap.appendChild(el('span', 'price', price(it.price, it.currency)));
    fig.append(box, cap);
    return fig;
  }

  // Puts `list` into `container` in order, reusing the elements of `known` (id → element):
  // new ones fade in, gone ones fade out, kept ones stay put.
  function reconcileItems(container, known, list, attr) {
    const ids = new Set(list.map((it) => it.id));
    for (const [id, e] of known) {
      if (!ids.has(id)) {
        known.delete(id);
        leave(e);
      }
    }
    list.forEach((it, i) => {
      let e = known.get(it.id);
      if (!e) {
        e = itemCard(it, attr);
        e.style.setProperty('--i', i);
        known.set(it.id, e);
        container.appendChild(e);
        enter(e);
      } else {
        container.appendChild(e); // moves it into rank order
      }
    });
  }

  function newPanel() {
    return { el: el('section', 'shopper'), rows: new Map() };
  }

  function updatePanel(p, garments, cols) {
    p.el.style.setProperty('--cols', cols);
    const keys = new Set(garments.map((g) => `${g.group}/${g.kind || ''}`));
    for (const [k, r] of p.rows) {
      if (!keys.has(k)) {
        p.rows.delete(k);
        leave(r.el);
      }
    }
    for (const g of garments) {
      const k = `${g.group}/${g.kind || ''}`;
      let r = p.rows.get(k);
      if (!r) {
        const row = el('div', 'garment');
        const head = el('header');
        head.appendChild(el('span', 'group', groupName(g)));
        if (g.kind && g.kind.toLowerCase() !== g.group.toLowerCase()) {
          head.appendChild(el('span', 'kind', g.kind));
        }
        const items = el('div', 'items');
        row.append(head, items);
        r = { el: row, itemsEl: items, items: new Map() };
        p.rows.set(k, r);
        p.el.appendChild(row);
        enter(row);
      } else {
        p.el.appendChild(r.el);
      }
      reconcileItems(r.itemsEl, r.items, g.items.slice(0, cols), 'itemId');
    }
  }

  // Horizontal centre of a shopper as seen from the street: the camera looks out, so its left
  // is the shopper's right. Columns are placed so each shopper's column is roughly in front of
  // them.
  const streetX = (s, width) => width - (s.bbox[0] + s.bbox[2]) / 2;

  // Which shoppers get the screen: those with something to show, the ones already on screen
  // first (so columns do not jump as people move), then the nearest (tallest box).
  function pick(shoppers) {
    const withItems = shoppers.filter((s) => s.garments.some((g) => g.items.length > 0));
    const height = (s) => s.bbox[3] - s.bbox[1];
    withItems.sort((a, b) =>
      (panels.has(b.track_id) - panels.has(a.track_id)) ||
      (b.in_view - a.in_view) ||
      (height(b) - height(a)));
    return withItems.slice(0, MAX_SHOPPERS);
  }

  function render(recs) {
    stats.renders += 1;
    const shown = pick(recs.shoppers || []);
    if (shown.length > 0) {
      st.lastShopperAt = Date.now();
      const keep = new Set(shown.map((s) => s.track_id));
      for (const [id, p] of panels) {
        if (!keep.has(id)) {
          panels.delete(id);
          leave(p.el);
        }
      }
      const cols = Math.floor(CARDS_ACROSS / shown.length);
      const rows = shown.length === 1 ? MAX_ROWS + 1 : MAX_ROWS;
      for (const s of shown) {
        let p = panels.get(s.track_id);
        if (!p) {
          p = newPanel();
          p.x = streetX(s, recs.frame_width || 0);
          panels.set(s.track_id, p);
          // Before the first column standing further right in the street, if any.
          const after = [...panels.values()]
            .filter((o) => o !== p && o.el.isConnected && o.x > p.x)
            .sort((a, b) => a.x - b.x)[0];
          columns.insertBefore(p.el, after ? after.el : null);
          enter(p.el);
        }
        const garments = s.garments.filter((g) => g.items.length > 0).slice(0, rows);
        updatePanel(p, garments, cols);
      }
      setState('live');
      if (stats.firstLiveRenderMs === null) {
        requestAnimationFrame(() => { stats.firstLiveRenderMs = performance.now(); });
      }
    } else if (body.dataset.state === 'connecting') {
      setState('idle');
    }
    if (stats.firstDataRenderMs === null) {
      requestAnimationFrame(() => { stats.firstDataRenderMs = performance.now(); });
    }
  }

  function clearLive() {
    for (const p of panels.values()) leave(p.el);
    panels.clear();
  }

  // --- attract screen ------------------------------------------------------------------------

  async function loadShowcase() {
    try {
      const r = await fetch('/api/showcase?n=24', { cache: 'no-store' });
      if (!r.ok) return;
      const data = await r.json();
      st.showcase = data.items || [];
      st.showcaseNext = 0;
      st.showcaseAt = 0;
    } catch (_) {
      // Daemon not reachable: keep what we have; the next hello reloads it.
    }
  }

  const showcaseKnown = new Map();
  function rotateShowcase() {
    if (st.showcase.length === 0) return;
    const page = [];
    for (let i = 0; i < Math.min(SHOWCASE_PAGE, st.showcase.length); i += 1) {
      page.push(st.showcase[(st.showcaseNext + i) % st.showcase.length]);
    }
    st.showcaseNext = (st.showcaseNext + SHOWCASE_PAGE) % st.showcase.length;
    // A whole new page each time: clear, then fade the next ones in.
    for (const e of showcaseKnown.values()) leave(e);
    showcaseKnown.clear();
    setTimeout(() => reconcileItems(showcaseEl, showcaseKnown, page, 'showcaseId'), FADE_MS);
  }

  // --- debug view (technicians only, server.debug_view) --------------------------------------

  function setDebug(on) {
    const box = document.getElementById('debug');
    box.hidden = !on;
    if (st.debugTimer) clearInterval(st.debugTimer);
    st.debugTimer = null;
    if (!on) return;
    const img = document.getElementById('debug-frame');
    const canvas = document.getElementById('debug-boxes');
    img.onerror = () => {
      document.getElementById('debug-note').textContent =
        'Debug view: no camera image (only shown to a browser on the appliance itself)';
    };
    st.debugTimer = setInterval(async () => {
      img.src = `/debug/frame.jpg?t=${Date.now()}`;
      try {
        const recs = await (await fetch('/api/recommendations', { cache: 'no-store' })).json();
        const w = canvas.clientWidth;
        const h = canvas.clientHeight;
        canvas.width = w;
        canvas.height = h;
        const sx = w / (recs.frame_width || 1);
        const sy = h / (recs.frame_height || 1);
        const ctx = canvas.getContext('2d');
        ctx.lineWidth = 2;
        ctx.font = '12px sans-serif';
        for (const s of recs.shoppers) {
          ctx.strokeStyle = s.in_view ? '#ffc53d' : '#777';
          // Boxes are [xmin, ymin, xmax, ymax] in frame pixels.
          const [x0, y0, x1, y1] = s.bbox;
          ctx.strokeRect(x0 * sx, y0 * sy, (x1 - x0) * sx, (y1 - y0) * sy);
          ctx.fillStyle = ctx.strokeStyle;
          ctx.fillText(`#${s.track_id}`, x0 * sx + 2, y0 * sy + 12);
          for (const g of s.garments) {
            ctx.strokeStyle = '#4cc9f0';
            const [gx0, gy0, gx1, gy1] = g.bbox;
            ctx.strokeRect(gx0 * sx, gy0 * sy, (gx1 - gx0) * sx, (gy1 - gy0) * sy);
          }
        }
      } catch (_) { /* the next tick tries again */ }
    }, 500);
  }

  // --- the live link -------------------------------------------------------------------------

  function linkUp(up) {
    body.dataset.link = up ? 'up' : 'down';
    if (up) st.linkDownSince = 0;
    else if (!st.linkDownSince) st.linkDownSince = Date.now();
  }

  function connect() {
    if (st.es) st.es.close();
    const es = new EventSource('/api/events');
    st.es = es;
    st.lastEventAt = Date.now();
    es.onopen = () => {
      st.retryMs = 1000;
      linkUp(true);
    };
    es.onerror = () => {
      linkUp(false);
      // The browser retries by itself unless it gave up (e.g. an error page instead of a
      // stream); then we start over, waiting longer each time up to 10 s.
      if (es.readyState === EventSource.CLOSED && st.es === es) {
        setTimeout(connect, st.retryMs);
        st.retryMs = Math.min(st.retryMs * 2, 10000);
      }
    };
    es.addEventListener('hello', (e) => {
      st.lastEventAt = Date.now();
      const h = JSON.parse(e.data);
      if (st.version && h.version !== st.version) {
        location.reload(); // a new binary: get its page
        return;
      }
      if (st.boot !== h.boot) loadShowcase(); // new daemon, maybe a new catalog
      st.version = h.version;
      st.boot = h.boot;
      stats.boot = h.boot;
      body.dataset.boot = h.boot;
      linkUp(true);
      setDebug(Boolean(h.debug_view));
    });
    es.addEventListener('recommendations', (e) => {
      st.lastEventAt = Date.now();
      stats.events += 1;
      render(JSON.parse(e.data));
    });
    es.addEventListener('ping', () => { st.lastEventAt = Date.now(); });
  }

  setInterval(() => {
    const now = Date.now();
    if (now - st.lastEventAt > SILENT_STREAM_MS) connect();
    if (st.linkDownSince && now - st.linkDownSince > OFFLINE_AFTER_MS && panels.size > 0) {
      clearLive();
      setState('idle');
    }
    if (body.dataset.state === 'live' && now - st.lastShopperAt > IDLE_AFTER_MS) {
      setState('idle');
      setTimeout(() => { if (body.dataset.state !== 'live') clearLive(); }, FADE_MS);
    }
    if (body.dataset.state !== 'live' && now - st.showcaseAt > SHOWCASE_EVERY_MS) {
      st.showcaseAt = now;
      rotateShowcase();
    }
  }, 500);

  // A page being left (or frozen in the back/forward cache) gives its stream back at once:
  // browsers allow only six connections per host, and a stream held by a hidden page would
  // stall the next load until it timed out.
  window.addEventListener('pagehide', () => {
    if (st.es) st.es.close();
    st.es = null;
  });
  window.addEventListener('pageshow', (e) => { if (e.persisted) connect(); });

  loadShowcase().then(() => { st.showcaseAt = 0; });
  connect();
})();
