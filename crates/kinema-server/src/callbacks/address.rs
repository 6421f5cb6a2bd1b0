//! Which addresses a callback may reach (docs/api.md, "Callbacks", SSRF): a pure
//! classification of IPv4 and IPv6 addresses, and the operator's allowances. An IPv6
//! address that carries an IPv4 one (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`,
//! 6to4 `2002:AABB:CCDD::`) is judged by the IPv4 address it carries.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// What kind of address a callback's host is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Public,
    Unspecified,
    Loopback,
    /// RFC 1918 and IPv6 unique local (fc00::/7).
    Private,
    LinkLocal,
    /// 100.64.0.0/10, carrier-grade NAT.
    SharedAddressSpace,
    Multicast,
    /// Broadcast, reserved, documentation, benchmarking and protocol ranges.
    Reserved,
    /// NAT64 and Teredo: the address leads somewhere else.
    Translation,
}

impl AddressClass {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Unspecified => "unspecified",
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::LinkLocal => "link-local",
            Self::SharedAddressSpace => "shared (carrier-grade NAT)",
            Self::Multicast => "multicast",
            Self::Reserved => "reserved",
            Self::Translation => "a translation prefix (NAT64, Teredo)",
        }
    }

    /// What `--callback-allow-private` lets through: a host on the operator's own
    /// networks; never an address no host answers on (unspecified, multicast,
    /// reserved) nor a translation prefix.
    fn private_network(self) -> bool {
        matches!(
            self,
            Self::Loopback | Self::Private | Self::LinkLocal | Self::SharedAddressSpace
        )
    }
}

const V4: &[(Ipv4Net, AddressClass)] = {
    use AddressClass::*;
    &[
        (
            Ipv4Net::new_assert(Ipv4Addr::new(0, 0, 0, 0), 8),
            Unspecified,
        ),
        (Ipv4Net::new_assert(Ipv4Addr::new(10, 0, 0, 0), 8), Private),
        (
            Ipv4Net::new_assert(Ipv4Addr::new(100, 64, 0, 0), 10),
            SharedAddressSpace,
        ),
        (
            Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8),
            Loopback,
        ),
        // Includes the cloud metadata address 169.254.169.254.
        (
            Ipv4Net::new_assert(Ipv4Addr::new(169, 254, 0, 0), 16),
            LinkLocal,
        ),
        (
            Ipv4Net::new_assert(Ipv4Addr::new(172, 16, 0, 0), 12),
            Private,
        ),
        (
            Ipv4Net::new_assert(Ipv4Addr::new(192, 0, 0, 0), 24),
            Reserved,
        ),
        (
            Ipv4Net::new_assert(Ipv4Addr::new(192, 0, 2, 0), 24),
            Reserved,
        ),
        (
            Ipv4Net::new_assert(Ipv4Addr::new(192, 88, 99, 0), 24),
            Reserved,
        ),
        (
            Ipv4Net::new_assert(Ipv4Addr::new(192, 168, 0, 0), 16),
            Private,
        ),
        (
            Ipv4Net::new_assert(Ipv4Addr::new(198, 18, 0, 0), 15),
            Reserved,
        ),
        (
            Ipv4Net::new_assert(Ipv4Addr::new(198, 51, 100, 0), 24),
            Reserved,
        ),
        (
            Ipv4Net::new_assert(Ipv4Addr::new(203, 0, 113, 0), 24),
            Reserved,
        ),
        (
            Ipv4Net::new_assert(Ipv4Addr::new(224, 0, 0, 0), 4),
            Multicast,
        ),
        // 240/4, with the broadcast address 255.255.255.255.
        (
            Ipv4Net::new_assert(Ipv4Addr::new(240, 0, 0, 0), 4),
            Reserved,
        ),
    ]
};

const V6: &[(Ipv6Net, AddressClass)] = {
    use AddressClass::*;
    &[
        // NAT64 well-known and local-use prefixes.
        (
            Ipv6Net::new_assert(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96),
            Translation,
        ),
        (
            Ipv6Net::new_assert(Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48),
            Translation,
        ),
        // Discard-only.
        (
            Ipv6Net::new_assert(Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64),
            Reserved,
        ),
        // Teredo (2001::/32), then documentation.
        (
            Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32),
            Translation,
        ),
        (
            Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32),
            Reserved,
        ),
        (
            Ipv6Net::new_assert(Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20),
            Reserved,
        ),
        (
            Ipv6Net::new_assert(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),
            Private,
        ),
        (
            Ipv6Net::new_assert(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
            LinkLocal,
        ),
        // Site-local, deprecated but still routed by some networks.
        (
            Ipv6Net::new_assert(Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10),
            Private,
        ),
        (
            Ipv6Net::new_assert(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),
            Multicast,
        ),
    ]
};

/// The address an IP stands for: an IPv6 address carrying an IPv4 one gives that.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
    }
}

fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = v6.segments();
    // IPv4-compatible (::a.b.c.d, deprecated); :: and ::1 are themselves.
    if s[..6].iter().all(|&x| x == 0) && !(s[6] == 0 && s[7] <= 1) {
        return Some(Ipv4Addr::from(((s[6] as u32) << 16) | s[7] as u32));
    }
    // 6to4: 2002:AABB:CCDD::/48 carries AA.BB.CC.DD.
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::from(((s[1] as u32) << 16) | s[2] as u32));
    }
    None
}

pub fn classify(ip: IpAddr) -> AddressClass {
    match canonical(ip) {
        IpAddr::V4(v4) => V4
            .iter()
            .find(|(net, _)| net.contains(&v4))
            .map_or(AddressClass::Public, |(_, class)| *class),
        IpAddr::V6(v6) if v6.is_unspecified() => AddressClass::Unspecified,
        IpAddr::V6(v6) if v6.is_loopback() => AddressClass::Loopback,
        IpAddr::V6(v6) => V6
            .iter()
            .find(|(net, _)| net.contains(&v6))
            .map_or(AddressClass::Public, |(_, class)| *class),
    }
}

/// The operator's allowances (`--callback-allow-private`, `--callback-allow-cidr`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetPolicy {
    pub allow_private: bool,
    /// Addresses allowed whatever their class.
    pub allow: Vec<IpNet>,
}

impl TargetPolicy {
    /// `Ok` if a callback may connect to `ip`, else the class that refuses it.
    pub fn check(&self, ip: IpAddr) -> Result<(), AddressClass> {
        let ip = canonical(ip);
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        match classify(ip) {
            AddressClass::Public => Ok(()),
            class if self.allow_private && class.private_network() => Ok(()),
            class => Err(class),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AddressClass::*;
    use super::*;

    fn class(s: &str) -> AddressClass {
        classify(s.parse().unwrap())
    }

    #[test]
    fn ipv4_ranges_are_classified() {
        for (ip, want) in [
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Unspecified),
            ("10.0.0.1", Private),
            ("10.255.255.255", Private),
            ("100.64.0.1", SharedAddressSpace),
            ("100.127.255.254", SharedAddressSpace),
            ("100.100.100.200", SharedAddressSpace),
            ("127.0.0.1", Loopback),
            ("127.255.0.9", Loopback),
            ("169.254.169.254", LinkLocal),
            ("169.254.0.1", LinkLocal),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.1.1", Private),
            ("192.0.0.192", Reserved),
            ("198.18.0.1", Reserved),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("240.0.0.1", Reserved),
            ("255.255.255.255", Reserved),
        ] {
            assert_eq!(class(ip), want, "{ip}");
        }
    }

    #[test]
    fn ipv4_neighbours_of_the_ranges_are_public() {
        for ip in [
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "223.255.255.255",
            "1.1.1.1",
            "8.8.8.8",
        ] {
            assert_eq!(class(ip), Public, "{ip}");
        }
    }

    #[test]
    fn ipv6_ranges_are_classified() {
        for (ip, want) in [
            ("::", Unspecified),
            ("::1", Loopback),
            ("fc00::1", Private),
            ("fd00:ec2::254", Private),
            ("fdff:ffff::1", Private),
            ("fe80::1", LinkLocal),
            ("febf::1", LinkLocal),
            ("fec0::1", Private),
            ("ff02::1", Multicast),
            ("ff00::", Multicast),
            ("64:ff9b::a00:1", Translation),
            ("64:ff9b::808:808", Translation),
            ("64:ff9b:1::1", Translation),
            ("2001::1", Translation),
            ("2001:db8::1", Reserved),
            ("100::1", Reserved),
        ] {
            assert_eq!(class(ip), want, "{ip}");
        }
        for ip in [
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "fbff::1",
            "fe7f::1",
        ] {
            assert_eq!(class(ip), Public, "{ip}");
        }
    }

    #[test]
    fn ipv6_carrying_ipv4_is_judged_by_the_ipv4() {
        for (ip, want) in [
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:7f00:1", Loopback),
            ("::ffff:10.1.2.3", Private),
            ("::ffff:169.254.169.254", LinkLocal),
            ("::ffff:0.0.0.0", Unspecified),
            ("::127.0.0.1", Loopback),
            ("::192.168.0.1", Private),
            ("2002:7f00:1::", Loopback),
            ("2002:a9fe:a9fe::1", LinkLocal),
            ("::ffff:8.8.8.8", Public),
            ("2002:808:808::1", Public),
        ] {
            assert_eq!(class(ip), want, "{ip}");
        }
    }

    #[test]
    fn allowances_open_only_what_they_name() {
        let strict = TargetPolicy::default();
        assert_eq!(strict.check("127.0.0.1".parse().unwrap()), Err(Loopback));
        assert_eq!(strict.check("8.8.8.8".parse().unwrap()), Ok(()));

        let private = TargetPolicy {
            allow_private: true,
            allow: vec![],
        };
        for ip in [
            "127.0.0.1",
            "::1",
            "10.0.0.1",
            "fd00::1",
            "169.254.169.254",
            "100.64.0.1",
        ] {
            assert_eq!(private.check(ip.parse().unwrap()), Ok(()), "{ip}");
        }
        for ip in [
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "ff02::1",
            "255.255.255.255",
            "64:ff9b::a00:1",
        ] {
            assert!(private.check(ip.parse().unwrap()).is_err(), "{ip}");
        }

        let one = TargetPolicy {
            allow_private: false,
            allow: vec!["127.0.0.2/32".parse().unwrap()],
        };
        assert_eq!(one.check("127.0.0.2".parse().unwrap()), Ok(()));
        assert_eq!(one.check("::ffff:127.0.0.2".parse().unwrap()), Ok(()));
        assert_eq!(one.check("127.0.0.1".parse().unwrap()), Err(Loopback));
        assert_eq!(one.check("::1".parse().unwrap()), Err(Loopback));
    }
}
