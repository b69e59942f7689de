//! The deployment files: alert rules checked and unit-tested by promtool (Debian package
//! `prometheus`, installed by the test bed), dashboards well formed and provisioned, and
//! docker-compose.yml consistent with obzvon.example.toml and the Asterisk configuration.
//! Docker cannot run here, so the compose file is checked structurally, not started.
//! (That every dashboard queries only metrics obzvon exports is checked against a running
//! dialer in tests/reports.rs.)

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;

use common::{dashboards, repo_path};
use secrecy::ExposeSecret;

fn yaml(path: &str) -> serde_norway::Value {
    let text = std::fs::read_to_string(repo_path(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{path} is not valid YAML: {e}"))
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("promtool: {e}; `scripts/testbed.sh up` installs it (Debian package prometheus)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn alert_rules_pass_promtool_and_fire_when_they_should() {
    let alerts = repo_path("alerts");
    let checked = promtool(&["check", "rules", "obzvon.rules.yml"], &alerts);
    assert!(checked.contains("SUCCESS: 6 rules found"), "{checked}");
    promtool(&["test", "rules", "obzvon.rules.test.yml"], &alerts);
    // Every alert has a unit test.
    let rules = yaml("alerts/obzvon.rules.yml");
    let tests = std::fs::read_to_string(repo_path("alerts/obzvon.rules.test.yml")).unwrap();
    for rule in rules["groups"][0]["rules"].as_sequence().unwrap() {
        let name = rule["alert"].as_str().unwrap();
        if name != "ObzvonDown" {
            assert!(
                tests.contains(&format!("alertname: {name}")),
                "{name} has no promtool test"
            );
        }
    }
    // The compose stack's Prometheus configuration loads these rules as mounted.
    let dir = std::env::temp_dir().join(format!("obzvon-prom-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::copy(
        repo_path("docker/prometheus/prometheus.yml"),
        dir.join("prometheus.yml"),
    )
    .unwrap();
    std::fs::copy(repo_path("alerts/obzvon.rules.yml"), dir.join("rules/obzvon.rules.yml")).unwrap();
    let checked = promtool(&["check", "config", "prometheus.yml"], &dir);
    assert!(checked.contains("SUCCESS: 6 rules found"), "{checked}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn dashboards_are_well_formed_and_use_the_provisioned_datasource() {
    let boards = dashboards();
    let names: Vec<&str> = boards.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["campaign-overview.json", "operators.json", "telephony-health.json"]
    );
    let datasources = yaml("dashboards/provisioning/datasources/prometheus.yml");
    let uid = datasources["datasources"][0]["uid"].as_str().unwrap();
    let mut uids = BTreeSet::new();
    for (name, board) in &boards {
        assert!(
            uids.insert(board["uid"].as_str().unwrap().to_owned()),
            "{name}: duplicate uid"
        );
        assert!(board["title"].as_str().is_some_and(|t| !t.is_empty()), "{name}: title");
        let mut ids = BTreeSet::new();
        let panels = board["panels"].as_array().unwrap();
        assert!(panels.len() >= 5, "{name}: a dashboard worth opening");
        for panel in panels {
            let title = panel["title"].as_str().unwrap();
            assert!(ids.insert(panel["id"].as_i64().unwrap()), "{name}: duplicate panel id");
            assert_eq!(panel["datasource"]["uid"], uid, "{name} / {title}");
            let targets = panel["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{name} / {title}: no query");
            for t in targets {
                assert!(t["expr"].as_str().unwrap().contains("obzvon_"), "{name} / {title}");
                assert_eq!(t["datasource"]["uid"], uid, "{name} / {title}");
            }
            let grid = &panel["gridPos"];
            assert!(
                grid["x"].as_i64().unwrap() + grid["w"].as_i64().unwrap() <= 24,
                "{name} / {title}: width"
            );
        }
    }
}

fn service<'a>(compose: &'a serde_norway::Value, name: &str) -> &'a serde_norway::Value {
    let s = &compose["services"][name];
    assert!(!s.is_null(), "docker-compose.yml has no service {name}");
    s
}

/// "host:container[:mode]" bind mounts of a service, host paths relative to the repository.
fn mounts(svc: &serde_norway::Value) -> HashMap<String, String> {
    svc["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .filter(|v| v.starts_with("./"))
        .map(|v| {
            let parts: Vec<&str> = v.split(':').collect();
            (parts[1].to_owned(), parts[0].trim_start_matches("./").to_owned())
        })
        .collect()
}

fn ini_value(path: &str, key: &str) -> String {
    let text = std::fs::read_to_string(repo_path(path)).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with(';'))
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| panic!("{path} has no {key}"))
}

#[test]
fn compose_is_complete_and_consistent_with_the_example_config() {
    let compose = yaml("docker-compose.yml");
    let services: BTreeSet<String> = compose["services"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    let expected: BTreeSet<String> = ["asterisk", "postgres", "rabbitmq", "prometheus", "grafana", "obzvon"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(services, expected);
    for name in &services {
        let svc = service(&compose, name);
        assert_eq!(
            svc["network_mode"], "host",
            "{name}: host network, so addresses match the config"
        );
        for host_path in mounts(svc).values() {
            assert!(
                repo_path(host_path).exists(),
                "{name} mounts {host_path}, which does not exist"
            );
        }
        if let Some(file) = svc["build"]["dockerfile"].as_str() {
            assert!(repo_path(file).is_file(), "{name}: {file}");
        }
        for dep in svc["depends_on"].as_mapping().into_iter().flatten() {
            assert!(
                services.contains(dep.0.as_str().unwrap()),
                "{name} depends on a missing service"
            );
        }
    }

    // Asterisk: Debian unstable, our configuration and dialplan.
    let dockerfile = std::fs::read_to_string(repo_path("docker/asterisk/Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("FROM debian:unstable"),
        "Asterisk image from Debian unstable"
    );
    assert!(dockerfile.contains("COPY asterisk-config/*.conf /etc/asterisk/"));
    assert!(dockerfile.contains("COPY dialplan/*.conf /etc/asterisk/obzvon/"));
    let obzvon_file = std::fs::read_to_string(repo_path("docker/obzvon/Dockerfile")).unwrap();
    for dir in ["src", "migrations", "benches"] {
        assert!(
            obzvon_file.contains(&format!("COPY {dir} {dir}")),
            "obzvon image copies {dir}/"
        );
    }

    // obzvon runs with the example configuration, as mounted.
    let obzvon = service(&compose, "obzvon");
    let config_path = obzvon["environment"]["OBZVON_CONFIG"].as_str().unwrap();
    assert_eq!(mounts(obzvon)[config_path], "obzvon.example.toml");
    let settings = obzvon::config::Settings::load(Some(&repo_path("obzvon.example.toml"))).unwrap();

    // PostgreSQL: the database URL's user, password, database and port.
    let db = url::Url::parse(settings.database.url.expose_secret()).unwrap();
    let pg = &service(&compose, "postgres")["environment"];
    assert_eq!(db.username(), pg["POSTGRES_USER"].as_str().unwrap());
    assert_eq!(db.password().unwrap(), pg["POSTGRES_PASSWORD"].as_str().unwrap());
    assert_eq!(db.path().trim_start_matches('/'), pg["POSTGRES_DB"].as_str().unwrap());
    assert_eq!((db.host_str(), db.port()), (Some("127.0.0.1"), Some(5432)));
    assert_eq!(
        mounts(service(&compose, "postgres"))["/docker-entrypoint-initdb.d/10-cdr.sql"],
        "migrations/20261124000006_cdr.sql"
    );
    // Asterisk's CDRs go to the same database with the same credentials.
    assert_eq!(
        ini_value("asterisk-config/cdr_pgsql.conf", "dbname"),
        pg["POSTGRES_DB"].as_str().unwrap()
    );
    assert_eq!(ini_value("asterisk-config/cdr_pgsql.conf", "user"), db.username());
    assert_eq!(
        ini_value("asterisk-config/cdr_pgsql.conf", "password"),
        db.password().unwrap()
    );
    assert_eq!(ini_value("asterisk-config/cdr_pgsql.conf", "port"), "5432");

    // RabbitMQ: the example's guest account, allowed beyond loopback by our broker config.
    let amqp = url::Url::parse(settings.amqp.url.expose_secret()).unwrap();
    assert_eq!(
        (amqp.username(), amqp.password(), amqp.port()),
        ("guest", Some("guest"), Some(5672))
    );
    let rabbit_conf = &mounts(service(&compose, "rabbitmq"))["/etc/rabbitmq/conf.d/20-obzvon.conf"];
    assert!(std::fs::read_to_string(repo_path(rabbit_conf))
        .unwrap()
        .contains("loopback_users = none"));

    // ARI: address, port, user and password as Asterisk's http.conf and ari.conf say.
    let ari = url::Url::parse(&settings.ari.url).unwrap();
    assert_eq!(
        ari.host_str().unwrap(),
        ini_value("asterisk-config/http.conf", "bindaddr")
    );
    assert_eq!(
        ari.port().unwrap().to_string(),
        ini_value("asterisk-config/http.conf", "bindport")
    );
    assert!(std::fs::read_to_string(repo_path("asterisk-config/ari.conf"))
        .unwrap()
        .contains(&format!("[{}]", settings.ari.username)));
    assert_eq!(
        ini_value("asterisk-config/ari.conf", "password"),
        settings.ari.password.expose_secret()
    );

    // Prometheus scrapes obzvon's [http] listen and loads alerts/ as mounted.
    let prom = service(&compose, "prometheus");
    let prom_mounts = mounts(prom);
    let prom_config = yaml(&prom_mounts["/etc/prometheus/prometheus.yml"]);
    let target = prom_config["scrape_configs"][0]["static_configs"][0]["targets"][0]
        .as_str()
        .unwrap();
    assert_eq!(target, settings.http.listen.to_string());
    assert_eq!(
        prom_config["scrape_configs"][0]["job_name"], "obzvon",
        "alerts use job=obzvon"
    );
    assert_eq!(prom_mounts["/etc/prometheus/rules"], "alerts");
    let rule_file = prom_config["rule_files"][0].as_str().unwrap();
    assert!(repo_path(&format!("alerts/{}", rule_file.trim_start_matches("rules/"))).is_file());
    let prom_listen = prom["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|c| c.as_str())
        .find_map(|c| c.strip_prefix("--web.listen-address="))
        .unwrap();

    // Grafana reads that Prometheus and the dashboards where the provisioning file looks.
    let grafana_mounts = mounts(service(&compose, "grafana"));
    let datasources = yaml(&format!(
        "{}/prometheus.yml",
        grafana_mounts["/etc/grafana/provisioning/datasources"]
    ));
    assert_eq!(
        datasources["datasources"][0]["url"].as_str().unwrap(),
        format!("http://{prom_listen}")
    );
    let providers = yaml(&format!(
        "{}/obzvon.yml",
        grafana_mounts["/etc/grafana/provisioning/dashboards"]
    ));
    let dashboards_path = providers["providers"][0]["options"]["path"].as_str().unwrap();
    assert_eq!(grafana_mounts[dashboards_path], "dashboards");
}
