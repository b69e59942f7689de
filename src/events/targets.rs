//! Where webhooks may be sent: only to public addresses, unless `[webhooks]
//! allow_private_targets` says otherwise. An admin token must not turn obzvon into a proxy to
//! the database, the broker, Asterisk's ARI or a cloud metadata service. The check runs when a
//! subscription is created (after DNS), again on every connection (a resolver that drops
//! private answers, so a name that later points inward is refused) and on every redirect.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether `ip` is an ordinary public unicast address: not loopback, private, shared (CGNAT),
/// link-local, unspecified, multicast, broadcast, documentation or reserved, in IPv4 or IPv6
/// (IPv4-mapped and NAT64 addresses are judged by the IPv4 address inside).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => public_v6(v6),
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (18..20).contains(&b))
        || a >= 240)
}

fn public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return public_v4(v4);
    }
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) carries an IPv4 address in its last 32 bits.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|&x| x == 0) {
        return public_v4(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        || s[0..6].iter().all(|&x| x == 0))
}

/// What is wrong with sending to this URL's host, if anything: a refusal in words an admin acts
/// on. Names are resolved; every address they resolve to must be public.
pub async fn refusal(url: &url::Url, allow_private: bool) -> Option<String> {
    if allow_private {
        return None;
    }
    let host = match url.host() {
        None => return Some("the address has no host".to_owned()),
        Some(url::Host::Ipv4(ip)) => return literal(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => return literal(IpAddr::V6(ip)),
        Some(url::Host::Domain(name)) => name.to_owned(),
    };
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((host.as_str(), port)).await {
        Ok(addrs) => addrs.collect(),
        Err(e) => return Some(format!("the host {host:?} does not resolve ({e})")),
    };
    match addrs.iter().find(|a| !is_public(a.ip())) {
        Some(a) => Some(format!(
            "the host {host:?} resolves to {}, which is not a public address; webhooks go to public \
             addresses only unless [webhooks] allow_private_targets = true",
            a.ip()
        )),
        None if addrs.is_empty() => Some(format!("the host {host:?} does not resolve")),
        None => None,
    }
}

/// The refusal for an address written as a literal (no DNS involved).
pub fn literal(ip: IpAddr) -> Option<String> {
    (!is_public(ip)).then(|| {
        format!(
            "{ip} is not a public address; webhooks go to public addresses only unless \
             [webhooks] allow_private_targets = true"
        )
    })
}

/// A resolver for the webhook client that keeps only public answers, so a name that resolves
/// inward at delivery time (DNS rebinding) is not connected to.
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found.iter().copied().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                let why = format!("{host} resolves to no public address ({found:?}); refused");
                return Err(why.into());
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

/// The resolver and redirect rule for a webhook client under `allow_private`.
pub fn guard(builder: reqwest::ClientBuilder, allow_private: bool) -> reqwest::ClientBuilder {
    if allow_private {
        return builder;
    }
    builder
        .dns_resolver(Arc::new(PublicOnly))
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            let literal_refusal = match attempt.url().host() {
                Some(url::Host::Ipv4(ip)) => literal(IpAddr::V4(ip)),
                Some(url::Host::Ipv6(ip)) => literal(IpAddr::V6(ip)),
                _ => None,
            };
            match literal_refusal {
                Some(why) => attempt.error(format!("redirect refused: {why}")),
                None if attempt.previous().len() >= 5 => attempt.error("more than 5 redirects"),
                None => attempt.follow(),
            }
        }))
}

/// The URL as logs may show it: scheme, host, port and path; no user, password or query.
pub fn loggable(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port().map(|p| format!(":{p}")).unwrap_or_default(),
            u.path()
        ),
        Err(_) => "(unparsable URL)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inward_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "fc00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2001:db8::1",
            "::127.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2a00:1450:4010::65",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn logs_see_no_credentials_or_query() {
        assert_eq!(
            loggable("https://crm:s3cret@hooks.example.org:8443/in/obzvon?token=abc"),
            "https://hooks.example.org:8443/in/obzvon"
        );
    }

    #[tokio::test]
    async fn literal_and_resolved_inward_targets_are_refused_unless_allowed() {
        for raw in [
            "http://127.0.0.1:5432/",
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data",
            "http://localhost:8088/ari",
        ] {
            let url = url::Url::parse(raw).unwrap();
            let why = refusal(&url, false).await.unwrap();
            assert!(why.contains("not a public address"), "{raw}: {why}");
            assert_eq!(refusal(&url, true).await, None);
        }
    }
}
