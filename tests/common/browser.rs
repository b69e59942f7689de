//! Headless Chromium from Debian's packages (`chromium`, `chromium-driver`), driven over
//! WebDriver. Each [`Browser`] is a chromedriver of its own with one fresh profile; dropping
//! it ends both. Screenshots go to `target/console-screenshots/` (test artefacts).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

pub struct Browser {
    pub client: Client,
    _driver: Driver,
    _profile: tempfile::TempDir,
}

/// chromedriver in a process group of its own, with the browsers it starts; the whole group
/// is ended when dropped (also when a test fails before it closes its session, which would
/// otherwise leave Chromium running without its driver).
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.wait();
    }
}

pub fn screenshot_dir() -> PathBuf {
    let dir = super::repo_path("target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Browser {
    pub async fn start() -> Browser {
        for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(
                std::path::Path::new(tool).exists(),
                "{tool} is missing: `scripts/testbed.sh browser` installs Debian's chromium and chromium-driver"
            );
        }
        // fantoccini and the other HTTP clients bring two TLS back ends; pick one for the process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let port = super::process::free_port();
        let driver = Driver(
            Command::new("/usr/bin/chromedriver")
                .arg(format!("--port={port}"))
                // Times on the pages (and the callback picker) read in UTC whatever the box's zone.
                .env("TZ", "UTC")
                .process_group(0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start chromedriver"),
        );
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1366,900",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": "/usr/bin/chromium", "args": args }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let mut last = None;
        for _ in 0..100 {
            match ClientBuilder::rustls()
                .expect("rustls")
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    return Browser {
                        client,
                        _driver: driver,
                        _profile: profile,
                    }
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not start a browser: {last:?}");
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// The element once it exists (up to 15 s).
    pub async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css:?} on the page: {e}"))
    }

    /// Clicks the element; found again if the page replaced it in between (live updates
    /// re-render parts of a page).
    pub async fn click(&self, css: &str) {
        for _ in 0..3 {
            match self.find(css).await.click().await {
                Ok(()) => return,
                Err(fantoccini::error::CmdError::Standard(e))
                    if e.error == fantoccini::error::ErrorStatus::StaleElementReference => {}
                Err(e) => panic!("click {css:?}: {e}"),
            }
        }
        panic!("{css:?} kept being replaced while it was clicked");
    }

    /// Replaces an input's value by typing it.
    pub async fn fill(&self, css: &str, text: &str) {
        let input = self.find(css).await;
        input.clear().await.unwrap();
        input.send_keys(text).await.unwrap();
    }

    pub async fn text(&self, css: &str) -> String {
        for _ in 0..3 {
            match self.find(css).await.text().await {
                Ok(text) => return text,
                Err(fantoccini::error::CmdError::Standard(e))
                    if e.error == fantoccini::error::ErrorStatus::StaleElementReference => {}
                Err(e) => panic!("text of {css:?}: {e}"),
            }
        }
        panic!("{css:?} kept being replaced while it was read");
    }

    /// Waits until the element's text satisfies `pred` (up to `limit`); returns the text.
    pub async fn wait_text(&self, css: &str, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        let mut last = String::new();
        loop {
            if let Ok(el) = self.client.find(Locator::Css(css)).await {
                if let Ok(text) = el.text().await {
                    if pred(&text) {
                        return text;
                    }
                    last = text;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                let shot = self.screenshot("failure").await;
                let page = self.eval("return document.body.innerText.slice(0, 2000)").await;
                panic!(
                    "{css:?} never showed what was expected; last text: {last:?}\nthe page ({}):\n{}",
                    shot.display(),
                    page.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs JavaScript in the page and returns its value.
    pub async fn eval(&self, script: &str) -> serde_json::Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// Saves a PNG of the window as `target/console-screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}
