//! A real browser for the console's tests: Debian's headless chromium driven over WebDriver
//! by a chromedriver this module starts on a free port and stops when dropped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::process::{Child, Command};

/// How long a page has to show what a test waits for.
pub const DEADLINE: Duration = Duration::from_secs(20);

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const INSTALL: &str = "apt-get install -y chromium chromium-driver (or `make deps`)";

/// chromedriver and one browser session.
pub struct Browser {
    pub client: Client,
    _driver: Child,
}

impl Browser {
    /// Starts chromedriver and a headless chromium `width` pixels wide. Fails (never skips)
    /// when either is missing, naming the packages to install.
    pub async fn start(width: u32, height: u32) -> Self {
        for binary in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                Path::new(binary).exists(),
                "{binary} is missing: the console's browser tests need it; install it with {INSTALL}"
            );
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {CHROMEDRIVER}: {err}; {INSTALL}"));
        let client = connect(port, width, height).await;
        Self {
            client,
            _driver: driver,
        }
    }

    /// Waits for the element `css` to exist and its text to satisfy `ready`; returns it.
    pub async fn wait_text(&self, css: &str, ready: impl Fn(&str) -> bool) -> Element {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let mut last = String::from("(no such element)");
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                match element.text().await {
                    Ok(text) if ready(&text) => return element,
                    Ok(text) => last = text,
                    Err(_) => {}
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting on {css}; its text was: {last}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves a PNG of the window as `<dir>/<name>.png`.
    pub async fn screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// A port nobody listens on now (chromedriver binds it itself).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("its address").port()
}

/// Opens a WebDriver session, retrying while chromedriver is still starting.
async fn connect(port: u16, width: u32, height: u32) -> Client {
    let mut options = serde_json::json!({
        "binary": CHROMIUM,
        // Root in a container: no sandbox; no GPU; /dev/shm may be tiny.
        "args": [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            format!("--window-size={},{height}", width.max(500)),
        ],
    });
    // Headless windows are at least 500 px wide: a phone's width is a device emulated.
    if width < 500 {
        options["mobileEmulation"] = serde_json::json!({
            "deviceMetrics": { "width": width, "height": height, "pixelRatio": 1 }
        });
    }
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("goog:chromeOptions".into(), options);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let attempt = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await;
        match attempt {
            Ok(client) => return client,
            Err(err) => assert!(
                tokio::time::Instant::now() < deadline,
                "no WebDriver session from chromedriver on port {port}: {err}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Where screenshots go: `<target>/console-screenshots/`, beside the test binaries.
pub fn screenshot_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.parent().unwrap_or(tmp).join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("create the screenshot directory");
    dir
}
