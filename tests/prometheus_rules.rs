//! The shipped Prometheus files (`systemd/prometheus/`): the alert rules pass `promtool check
//! rules` and their unit tests (`promtool test rules`), every alert has a case where it fires and
//! one where it stays quiet, the rules ask only for series a box exports, and the scrape example
//! passes `promtool check config`.

#[path = "promtool_support/mod.rs"]
mod promtool;

use std::collections::BTreeMap;
use std::path::PathBuf;

use vitrine::telemetry::Metrics;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("systemd/prometheus")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The alert names of the rules file, in order.
fn alerts() -> Vec<String> {
    read("vitrine.rules.yml")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|a| a.trim().to_string())
        .collect()
}

/// The channel subscriber's series (`src/catalog/channel`), as the issue names them: the rules
/// are written against these exact names.
const CHANNEL_SERIES: [&str; 8] = [
    "vitrine_channel_up",
    "vitrine_channel_last_check_timestamp_seconds",
    "vitrine_channel_last_success_timestamp_seconds",
    "vitrine_channel_behind_seconds",
    "vitrine_channel_info",
    "vitrine_channel_fetched_bytes_total",
    "vitrine_channel_refusals_total",
    "vitrine_channel_errors_total",
];

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let check = promtool::run(&dir(), &["check", "rules", "vitrine.rules.yml"], None);
    assert!(check.success, "promtool check rules:\n{}", check.output);
    let test = promtool::run(&dir(), &["test", "rules", "vitrine.rules.test.yml"], None);
    assert!(test.success, "promtool test rules:\n{}", test.output);
    assert!(test.output.contains("SUCCESS"), "{}", test.output);
}

#[test]
fn every_alert_has_a_case_where_it_fires_and_one_where_it_stays_quiet() {
    let alerts = alerts();
    assert!(alerts.len() >= 6, "{alerts:?}");
    // alert → (firing cases, quiet cases). A case is an `alertname:` line; it expects no alert
    // when its `exp_alerts` is `[]`.
    let mut cases: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let text = read("vitrine.rules.test.yml");
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for (i, l) in lines.iter().enumerate() {
        let Some(name) = l.strip_prefix("alertname:") else {
            continue;
        };
        let exp = lines[i + 1..]
            .iter()
            .find(|l| l.starts_with("exp_alerts:"))
            .unwrap_or_else(|| panic!("case for {name} has no exp_alerts"));
        let e = cases.entry(name.trim().to_string()).or_default();
        if exp.trim_end() == "exp_alerts: []" {
            e.1 += 1;
        } else {
            e.0 += 1;
        }
    }
    for a in &alerts {
        let (firing, quiet) = cases.get(a).copied().unwrap_or_default();
        assert!(
            firing > 0 && quiet > 0,
            "{a}: {firing} firing and {quiet} quiet cases in vitrine.rules.test.yml"
        );
    }
    for tested in cases.keys() {
        assert!(alerts.contains(tested), "test of an unknown alert {tested}");
    }
}

/// The rules' PromQL expressions (`expr:` on one line, or a `|` block under it).
fn expressions() -> Vec<String> {
    let rules = read("vitrine.rules.yml");
    let lines: Vec<&str> = rules.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let Some(e) = l.trim().strip_prefix("expr:") else {
            continue;
        };
        if e.trim() != "|" {
            out.push(e.trim().to_string());
            continue;
        }
        let indent = l.len() - l.trim_start().len();
        let block: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|b| b.len() - b.trim_start().len() > indent)
            .map(|b| b.trim())
            .collect();
        out.push(block.join("\n"));
    }
    out
}

#[test]
fn rules_ask_only_for_series_a_box_exports() {
    let m = Metrics::default();
    // A family shows once it has a member.
    m.set_providers([("detector", "CPUExecutionProvider")]);
    let exposition = m.encode();
    let exported: Vec<&str> = exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .chain(CHANNEL_SERIES)
        .collect();
    let exprs = expressions();
    assert_eq!(exprs.len(), alerts().len(), "{exprs:?}");
    let mut asked = 0;
    for e in &exprs {
        for (i, _) in e.match_indices("vitrine_") {
            let name: String = e[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            asked += 1;
            assert!(
                exported.contains(&name.as_str()),
                "the rules ask for {name}, which no box exports"
            );
        }
    }
    assert!(asked >= 9, "{asked} series names found in {exprs:?}");
}

#[test]
fn the_scrape_example_passes_promtool_check_config() {
    let r = promtool::run(&dir(), &["check", "config", "prometheus.yml"], None);
    assert!(r.success, "promtool check config:\n{}", r.output);
    assert!(
        r.output.contains("SUCCESS: 1 rule files found"),
        "{}",
        r.output
    );
}
