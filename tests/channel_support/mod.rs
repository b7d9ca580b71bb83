//! Real servers for the catalog channel tests, started by the tests themselves: s3s-fs (an
//! S3-compatible server that stores objects as files) and nginx (a plain HTTP origin with ETag,
//! `If-None-Match` and Range). Both are installed by `scripts/bootstrap --tests`.
//!
//! Each server gets a free port and its own temporary folder, and is killed on drop. `stop` and
//! `start` again on the same port and folder are how the tests take a server down mid-download.
#![allow(dead_code)]

pub mod follower;
pub mod publish;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn wait_listening(port: u16, child: &mut Child, what: &str) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening on {port}: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on {port} within 20 s");
}

/// A server process on a fixed port, killed on `stop` and on drop: what a test takes down and
/// brings back on the same port and folder.
struct Proc {
    port: u16,
    what: &'static str,
    child: Option<Child>,
}

impl Proc {
    fn new(what: &'static str) -> Proc {
        Proc {
            port: free_port(),
            what,
            child: None,
        }
    }

    /// Kills the server, as a crash or a network cut would.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts `cmd` (after stopping what ran) and waits until it listens on the port.
    fn run(&mut self, mut cmd: Command) {
        self.stop();
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.what));
        wait_listening(self.port, &mut child, self.what);
        self.child = Some(child);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

fn find_binary(env: &str, name: &str, candidates: &[PathBuf], install: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return p.into();
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(candidates.iter().cloned())
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed: the channel tests run against it. {install}, or set {env}"
            )
        })
}

/// An s3s-fs server: unsigned requests, objects stored as files under `root`.
pub struct S3Server {
    pub root: PathBuf,
    /// Access key and secret the server demands (SigV4); `None`: unsigned requests.
    pub keys: Option<(String, String)>,
    proc: Proc,
    _dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts a server with one empty bucket, `bucket`.
    pub fn start(bucket: &str) -> S3Server {
        Self::start_with(bucket, None)
    }

    /// [`Self::start`], demanding requests signed with these keys.
    pub fn start_with_keys(bucket: &str, access_key: &str, secret_key: &str) -> S3Server {
        Self::start_with(bucket, Some((access_key.into(), secret_key.into())))
    }

    fn start_with(bucket: &str, keys: Option<(String, String)>) -> S3Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("s3");
        std::fs::create_dir_all(root.join(bucket)).expect("bucket folder");
        let mut s = S3Server {
            root,
            keys,
            proc: Proc::new("s3s-fs"),
            _dir: dir,
        };
        s.resume();
        s
    }

    pub fn binary() -> PathBuf {
        let home = std::env::var("HOME").unwrap_or_default();
        find_binary(
            "VITRINE_S3S_FS",
            "s3s-fs",
            &[Path::new(&home).join(".cargo/bin/s3s-fs")],
            "Run scripts/bootstrap --tests",
        )
    }

    /// `http://127.0.0.1:PORT`, the endpoint an S3 client is pointed at.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.proc.port)
    }

    /// Kills the server (as a crash or a network cut would); objects stay on disk.
    pub fn stop(&mut self) {
        self.proc.stop();
    }

    /// Starts the server again on the same port and folder.
    pub fn resume(&mut self) {
        let mut cmd = Command::new(Self::binary());
        cmd.args(["--host", "127.0.0.1", "--port", &self.proc.port.to_string()]);
        if let Some((access, secret)) = &self.keys {
            cmd.args(["--access-key", access, "--secret-key", secret]);
        }
        cmd.arg(&self.root);
        self.proc.run(cmd);
    }
}

/// nginx serving `root` as a static origin, in the foreground under its own prefix.
pub struct Nginx {
    pub root: PathBuf,
    prefix: PathBuf,
    extra: String,
    proc: Proc,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Serves a new empty folder. `extra` is added inside the `server` block, e.g.
    /// `location /slow/ { limit_rate 100k; }` or `location /broken/ { return 500; }`.
    pub fn start(extra: &str) -> Nginx {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("www");
        let prefix = dir.path().join("nginx");
        std::fs::create_dir_all(&root).expect("www folder");
        std::fs::create_dir_all(prefix.join("logs")).expect("nginx prefix");
        let mut n = Nginx {
            root,
            prefix,
            extra: extra.into(),
            proc: Proc::new("nginx"),
            _dir: dir,
        };
        n.resume();
        n
    }

    pub fn binary() -> PathBuf {
        find_binary(
            "VITRINE_NGINX",
            "nginx",
            &[PathBuf::from("/usr/sbin/nginx")],
            "Run scripts/bootstrap --tests (Debian's nginx)",
        )
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.proc.port)
    }

    /// Kills nginx; the served folder stays.
    pub fn stop(&mut self) {
        self.proc.stop();
    }

    /// Starts nginx again on the same port and folder.
    pub fn resume(&mut self) {
        let p = &self.prefix;
        // One process: killing it takes the server down. With a master, its worker outlives a
        // SIGKILL of the master and goes on serving (and holding the port).
        let conf = format!(
            r#"master_process off;
worker_processes 1;
pid {pid};
error_log {err} warn;
events {{ worker_connections 1024; }}
http {{
    access_log {access};
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    types {{ application/json json; }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        etag on;
        {extra}
    }}
}}
"#,
            pid = p.join("nginx.pid").display(),
            err = p.join("logs/error.log").display(),
            access = p.join("logs/access.log").display(),
            tmp = p.display(),
            port = self.proc.port,
            root = self.root.display(),
            extra = self.extra,
        );
        std::fs::write(p.join("nginx.conf"), conf).expect("nginx.conf");
        let mut cmd = Command::new(Self::binary());
        cmd.arg("-p")
            .arg(p)
            .arg("-c")
            .arg(p.join("nginx.conf"))
            .args(["-g", "daemon off;"]);
        self.proc.run(cmd);
    }

    /// The access log so far: one line per request (method, path, status, bytes), to count the
    /// requests a box made.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("logs/access.log")).unwrap_or_default()
    }

    /// The access log once it has at least `lines` lines, or as it is after 5 s: nginx logs a
    /// request after its answer is sent, so a client can read the answer before the line exists.
    pub fn access_log_of(&self, lines: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.access_log();
            if log.lines().count() >= lines || Instant::now() >= deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// nginx whose answers a test switches while it runs, by creating files in `flags`: `fail` makes
/// every request a 500, `slow` sends at `rate` (e.g. "200k") per connection.
pub fn switchable_nginx(flags: &Path, rate: &str) -> Nginx {
    std::fs::create_dir_all(flags).expect("flags folder");
    let f = flags.display();
    Nginx::start(&format!(
        "location / {{
            if (-f {f}/fail) {{ return 500; }}
            if (-f {f}/slow) {{ set $limit_rate {rate}; }}
        }}"
    ))
}

/// Turns a [`switchable_nginx`] switch on or off.
pub fn switch(flags: &Path, name: &str, on: bool) {
    let p = flags.join(name);
    if on {
        std::fs::write(&p, b"").expect("flag");
    } else {
        let _ = std::fs::remove_file(&p);
    }
}

/// The access log's lines for requests of `path` (e.g. "/channel.json"), as (status, bytes).
pub fn requests(log: &str, path: &str) -> Vec<(u16, u64)> {
    let needle = format!("\"GET {path} ");
    log.lines()
        .filter(|l| l.contains(&needle))
        .filter_map(|l| {
            // combined format: … "GET /p HTTP/1.1" STATUS BYTES "referer" "agent"
            let after = l.split('"').nth(2)?.split_whitespace().collect::<Vec<_>>();
            Some((after.first()?.parse().ok()?, after.get(1)?.parse().ok()?))
        })
        .collect()
}
