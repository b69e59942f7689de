//! The far end of the fault suite's trunk (`PJSIP/{number}@faulttrunk` → 127.0.0.1:5090): the
//! same customers as the test bed's trunk (scripts/sipp/trunk-uas.xml), with every SIP message
//! logged. The log is the truth the suite checks against: how many times each attempt was
//! dialled (obzvon puts the attempt id in an `X-Obzvon-Attempt` header), and who hung up each
//! answered call (a BYE the far end sent is the customer's; one it received is the dialer's).

use std::collections::HashMap;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};

use super::repo_path;

pub const TRUNK: &str = "PJSIP/{number}@faulttrunk";
const PORT: u16 = 5090;

pub struct FarEnd {
    child: Child,
    pub log: PathBuf,
    /// When the first RTP packet arrived from each of Asterisk's RTP ports.
    first_audio: Arc<Mutex<HashMap<u16, DateTime<Utc>>>>,
}

/// One call as the far end saw it.
#[derive(Debug, Clone, Default)]
pub struct FarCall {
    pub call_id: String,
    pub attempt: Option<String>,
    pub invited_at: Option<DateTime<Utc>>,
    pub answered_at: Option<DateTime<Utc>>,
    /// When the call ended with a BYE, and whether the far end (the customer) sent it.
    pub bye: Option<(DateTime<Utc>, bool)>,
    /// Asterisk's RTP port for the call (from its INVITE's SDP).
    pub rtp_port: Option<u16>,
}

impl FarEnd {
    pub fn start(label: &str) -> FarEnd {
        let dir = std::env::temp_dir().join(format!("obzvon-farend-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("messages.log");
        let _ = std::fs::remove_file(&log);
        // The customers' audio comes here: the first packet of each call is the first thing
        // that customer hears.
        let audio = UdpSocket::bind("127.0.0.1:0").unwrap();
        let audio_port = audio.local_addr().unwrap().port().to_string();
        let first_audio = Arc::new(Mutex::new(HashMap::new()));
        let seen = first_audio.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((_, from)) = audio.recv_from(&mut buf) {
                seen.lock().unwrap().entry(from.port()).or_insert_with(Utc::now);
            }
        });
        let child = Command::new("sipp")
            .args(["-sf", repo_path("scripts/sipp/trunk-uas.xml").to_str().unwrap()])
            .args([
                "-i",
                "127.0.0.1",
                "-p",
                &PORT.to_string(),
                "-mi",
                "127.0.0.1",
                "-mp",
                "16900",
            ])
            .args(["-key", "audio_port", &audio_port])
            .args(["-nostdin", "-trace_msg", "-message_file", log.to_str().unwrap()])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp (Debian package sip-tester)");
        std::thread::sleep(Duration::from_millis(300));
        FarEnd {
            child,
            log,
            first_audio,
        }
    }

    /// When the customer of `call` first heard audio from Asterisk.
    pub fn first_audio(&self, call: &FarCall) -> Option<DateTime<Utc>> {
        let port = call.rtp_port?;
        self.first_audio.lock().unwrap().get(&port).copied()
    }

    /// Every call in the log so far, by Call-ID.
    pub fn calls(&self) -> Vec<FarCall> {
        parse(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }
}

impl Drop for FarEnd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses SIPp's `-trace_msg` log: blocks headed by a dashed line with the time, then
/// "UDP message received" or "sent", then the message.
pub fn parse(text: &str) -> Vec<FarCall> {
    let mut calls: HashMap<String, FarCall> = HashMap::new();
    let mut order = Vec::new();
    for block in text.split("----------------------------------------------- ").skip(1) {
        let mut lines = block.lines();
        let Some(stamp) = lines.next() else { continue };
        let Ok(at) = NaiveDateTime::parse_from_str(stamp.trim(), "%Y-%m-%d %H:%M:%S%.f") else {
            continue;
        };
        let at = at.and_utc();
        let Some(direction) = lines.next() else { continue };
        let received = direction.contains("received");
        let message: Vec<&str> = lines.skip_while(|l| l.trim().is_empty()).collect();
        let Some(first) = message.first() else { continue };
        let header = |name: &str| {
            message.iter().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        };
        let Some(call_id) = header("Call-ID") else { continue };
        let call = calls.entry(call_id.clone()).or_insert_with(|| {
            order.push(call_id.clone());
            FarCall {
                call_id: call_id.clone(),
                ..FarCall::default()
            }
        });
        let cseq = header("CSeq").unwrap_or_default();
        if first.starts_with("INVITE ") && received {
            call.invited_at.get_or_insert(at);
            if let Some(a) = header("X-Obzvon-Attempt") {
                call.attempt = Some(a);
            }
            if let Some(port) = message
                .iter()
                .find_map(|l| l.strip_prefix("m=audio ")?.split_whitespace().next()?.parse().ok())
            {
                call.rtp_port = Some(port);
            }
        } else if first.starts_with("SIP/2.0 200") && !received && cseq.ends_with("INVITE") {
            call.answered_at.get_or_insert(at);
        } else if first.starts_with("BYE ") && call.bye.is_none() {
            call.bye = Some((at, !received));
        }
    }
    order.into_iter().filter_map(|id| calls.remove(&id)).collect()
}
