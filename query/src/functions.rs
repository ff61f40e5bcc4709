//! SQL functions for addresses, as analysts of flows need them:
//!
//! | function | result |
//! |---|---|
//! | `ip_in_cidr(ip, cidr)` | whether `ip` is inside the block, e.g. `ip_in_cidr(dstIP, '10.0.0.0/8')` |
//! | `ip_version(ip)` | 4 or 6 |
//! | `ip_is_private(ip)` | RFC 1918 (10/8, 172.16/12, 192.168/16) or IPv6 unique local (fc00::/7) |
//! | `ip_is_loopback(ip)` | 127.0.0.0/8 or ::1 |
//!
//! Addresses are text as flowsql stores them (IPv4-mapped IPv6 counts as
//! IPv4). `ip_in_cidr` answers false for a value that is not an address (it
//! is not inside the block); the other functions answer NULL for it. A
//! malformed CIDR block is an error that names it.
//!
//! `ip_in_cidr` with an IPv4 block is on the hot path of analyst queries: a
//! dotted quad has no leading zeros, so every address of `10.0.0.0/8` starts
//! with the text `10.`; rows that do not are rejected by that comparison
//! alone, and only candidates are parsed.

use std::net::IpAddr;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, UInt8Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use flowsql_event::canonical_ip;

/// Every function of this module, to register on a session.
pub fn all() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::from(IpInCidr::new()),
        ScalarUDF::from(IpVersion::new()),
        ScalarUDF::from(IpPredicate::new("ip_is_private", is_private)),
        ScalarUDF::from(IpPredicate::new("ip_is_loopback", |ip| ip.is_loopback())),
    ]
}

/// An address block: network address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `a.b.c.d/n`, `x:y::/n`, or a bare address (a block of one).
    pub fn parse(text: &str) -> Option<Cidr> {
        let (address, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().ok()?)),
            None => (text.trim(), None),
        };
        let network = canonical_ip(address.parse::<IpAddr>().ok()?);
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical_ip(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

fn is_private(ip: IpAddr) -> bool {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => v4.is_private(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xfe00 == 0xfc00,
    }
}

/// Maps each string of `array` (any string type) through `f`, into any
/// collection of options (an Arrow array, a Vec).
fn map_strings<T, C: FromIterator<Option<T>>>(
    array: &ArrayRef,
    mut f: impl FnMut(Option<&str>) -> Option<T>,
) -> Result<C> {
    Ok(match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().iter().map(&mut f).collect(),
        DataType::LargeUtf8 => array.as_string::<i64>().iter().map(&mut f).collect(),
        DataType::Utf8View => array.as_string_view().iter().map(&mut f).collect(),
        other => return exec_err!("expected a string, got {other}"),
    })
}

fn parse_ip(text: Option<&str>) -> Option<IpAddr> {
    let text = text?;
    match parse_ipv4(text) {
        Some(v4) => Some(IpAddr::V4(v4.into())),
        None => text.parse().ok(),
    }
}

/// `in_block` over a string view column, deciding most rows from the
/// views alone: a view holds a string's length and first four bytes inline,
/// so a row whose first bytes are neither the block's dotted prefix nor `:`
/// (IPv4-mapped IPv6) is outside the block without reading the string.
/// Only candidates are read and parsed. Nulls stay null.
fn in_block_by_view(
    views: &datafusion::arrow::array::StringViewArray,
    prefix: &str,
    in_block: impl Fn(&str) -> bool,
) -> BooleanArray {
    let head = &prefix.as_bytes()[..prefix.len().min(4)];
    let mut want = [0u8; 4];
    let mut mask = [0u8; 4];
    want[..head.len()].copy_from_slice(head);
    mask[..head.len()].fill(0xff);
    let (want, mask) = (u32::from_le_bytes(want), u32::from_le_bytes(mask));
    let raw = views.views();
    let values = datafusion::arrow::buffer::BooleanBuffer::collect_bool(views.len(), |i| {
        // Bytes 0..4: the length; 4..8: the first bytes of the string
        // (zero-padded when shorter), in both inline and buffer views.
        let view = raw[i];
        let length = view as u32 as usize;
        let first = (view >> 32) as u32;
        let candidate = (length >= head.len() && first & mask == want) || first as u8 == b':';
        candidate && in_block(views.value(i))
    });
    BooleanArray::new(values, views.nulls().cloned())
}

/// The text every dotted quad of the block starts with: its whole octets
/// (`10.0.0.0/8` gives `10.`, `/16` gives `10.0.`); empty below /8.
fn dotted_prefix(network: u32, prefix: u8) -> String {
    let octets = network.to_be_bytes();
    let whole = usize::from(prefix / 8).min(4);
    let mut text = String::new();
    for octet in &octets[..whole] {
        text.push_str(&octet.to_string());
        text.push('.');
    }
    if whole == 4 {
        // A /32 is the whole address, with no dot after the last octet.
        text.pop();
    }
    text
}

/// A dotted quad, parsed without the generic parser's overhead: the common
/// case on the flow path. `None` for anything else (IPv6 text included).
fn parse_ipv4(text: &str) -> Option<u32> {
    let bytes = text.as_bytes();
    if bytes.len() < 7 || bytes.len() > 15 {
        return None;
    }
    let mut value = 0u32;
    let mut octet = 0u32;
    let mut digits = 0;
    let mut dots = 0;
    for &b in bytes {
        match b {
            b'0'..=b'9' => {
                // No leading zeros (as std::net), at most 255.
                if digits > 0 && octet == 0 {
                    return None;
                }
                octet = octet * 10 + u32::from(b - b'0');
                digits += 1;
                if octet > 255 {
                    return None;
                }
            }
            b'.' if digits > 0 && dots < 3 => {
                value = value << 8 | octet;
                octet = 0;
                digits = 0;
                dots += 1;
            }
            _ => return None,
        }
    }
    (dots == 3 && digits > 0).then_some(value << 8 | octet)
}

/// The arguments as arrays of `rows` rows (scalars expanded).
fn arrays(args: &ScalarFunctionArgs) -> Result<Vec<ArrayRef>> {
    args.args.iter().map(|a| a.to_array(args.number_rows)).collect()
}

/// A scalar result when every argument was a scalar.
fn shape(args: &ScalarFunctionArgs, array: ArrayRef) -> Result<ColumnarValue> {
    if args.args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&array, 0)?))
    } else {
        Ok(ColumnarValue::Array(array))
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct IpInCidr {
    signature: Signature,
}

impl IpInCidr {
    fn new() -> Self {
        IpInCidr { signature: Signature::string(2, Volatility::Immutable) }
    }
}

fn bad_cidr(text: &str) -> DataFusionError {
    DataFusionError::Execution(format!(
        "ip_in_cidr: {text:?} is not a CIDR block (expected e.g. '10.0.0.0/8' or '2001:db8::/32')"
    ))
}

impl ScalarUDFImpl for IpInCidr {
    fn name(&self) -> &str {
        "ip_in_cidr"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = arrays(&args)?;
        let [ips, blocks] = arrays.as_slice() else {
            return exec_err!("ip_in_cidr takes an address and a CIDR block");
        };
        let result: BooleanArray = match &args.args[1] {
            // The usual case: one block for the whole column, parsed once.
            ColumnarValue::Scalar(block) => {
                let Some(text) = block.try_as_str().flatten() else {
                    return Ok(ColumnarValue::Scalar(ScalarValue::Boolean(None)));
                };
                let cidr = Cidr::parse(text).ok_or_else(|| bad_cidr(text))?;
                match cidr.network {
                    // The usual case: an IPv4 block and dotted quads.
                    IpAddr::V4(network) => {
                        let mask = u32::MAX.checked_shl(32 - u32::from(cidr.prefix)).unwrap_or(0);
                        let network = u32::from(network) & mask;
                        let prefix = dotted_prefix(network, cidr.prefix);
                        let in_block = |text: &str| {
                            if text.starts_with(':') {
                                // ::ffff:a.b.c.d, the IPv4-mapped form.
                                parse_ip(Some(text)).is_some_and(|ip| cidr.contains(ip))
                            } else {
                                text.starts_with(prefix.as_str())
                                    && parse_ipv4(text).is_some_and(|v4| v4 & mask == network)
                            }
                        };
                        if let Some(views) = ips.as_string_view_opt() {
                            return Ok(ColumnarValue::Array(Arc::new(in_block_by_view(
                                views, &prefix, in_block,
                            ))));
                        }
                        map_strings(ips, |ip| ip.map(in_block))?
                    }
                    IpAddr::V6(_) => {
                        map_strings(ips, |ip| Some(parse_ip(ip).is_some_and(|ip| cidr.contains(ip))))?
                    }
                }
            }
            ColumnarValue::Array(_) => {
                let cidrs: Vec<_> = map_strings(blocks, |b| b.map(|b| (b.to_owned(), Cidr::parse(b))))?;
                let ips: Vec<Option<Option<IpAddr>>> =
                    map_strings(ips, |ip| ip.map(|text| parse_ip(Some(text))))?;
                let mut out = Vec::with_capacity(ips.len());
                for (ip, cidr) in ips.into_iter().zip(cidrs) {
                    out.push(match (ip, cidr) {
                        (Some(Some(ip)), Some((_, Some(cidr)))) => Some(cidr.contains(ip)),
                        (Some(None), Some((_, Some(_)))) => Some(false),
                        (_, Some((text, None))) => return Err(bad_cidr(&text)),
                        _ => None,
                    });
                }
                out.into_iter().collect()
            }
        };
        shape(&args, Arc::new(result))
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct IpVersion {
    signature: Signature,
}

impl IpVersion {
    fn new() -> Self {
        IpVersion { signature: Signature::string(1, Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for IpVersion {
    fn name(&self) -> &str {
        "ip_version"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::UInt8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = arrays(&args)?;
        let versions: UInt8Array = map_strings(&arrays[0], |ip| {
            parse_ip(ip).map(|ip| if canonical_ip(ip).is_ipv4() { 4u8 } else { 6 })
        })?;
        shape(&args, Arc::new(versions))
    }
}

/// A yes/no question about one address. Two are the same function when
/// they have the same name.
#[derive(Debug)]
struct IpPredicate {
    name: &'static str,
    test: fn(IpAddr) -> bool,
    signature: Signature,
}

impl PartialEq for IpPredicate {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for IpPredicate {}

impl std::hash::Hash for IpPredicate {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl IpPredicate {
    fn new(name: &'static str, test: fn(IpAddr) -> bool) -> Self {
        IpPredicate { name, test, signature: Signature::string(1, Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for IpPredicate {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = arrays(&args)?;
        let test = self.test;
        let answers: BooleanArray =
            map_strings(&arrays[0], |ip| parse_ip(ip).map(|ip| test(canonical_ip(ip))))?;
        shape(&args, Arc::new(answers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_membership() {
        let block = Cidr::parse("10.0.0.0/8").expect("cidr");
        assert!(block.contains("10.200.3.4".parse().expect("ip")));
        assert!(!block.contains("11.0.0.1".parse().expect("ip")));
        assert!(!block.contains("::1".parse().expect("ip")));
        assert!(block.contains("::ffff:10.1.1.1".parse().expect("ip")));
        let v6 = Cidr::parse("2001:db8::/32").expect("cidr");
        assert!(v6.contains("2001:db8:ffff::1".parse().expect("ip")));
        assert!(!v6.contains("2001:db9::1".parse().expect("ip")));
        assert!(Cidr::parse("0.0.0.0/0").expect("all").contains("203.0.113.9".parse().expect("ip")));
        assert!(Cidr::parse("192.0.2.7").expect("host").contains("192.0.2.7".parse().expect("ip")));
        for bad in ["10.0.0.0/33", "2001:db8::/129", "nope", "10.0.0.0/x", ""] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn dotted_quads_parse_like_std() {
        for text in ["0.0.0.0", "255.255.255.255", "10.1.2.3", "192.168.0.1"] {
            let std: std::net::Ipv4Addr = text.parse().expect("valid");
            assert_eq!(parse_ipv4(text), Some(u32::from(std)), "{text}");
        }
        for text in [
            "256.0.0.1",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "1..2.3",
            ".1.2.3",
            "1.2.3.",
            "::1",
            "a.b.c.d",
            "",
        ] {
            assert_eq!(parse_ipv4(text), None, "{text}");
            assert_eq!(parse_ipv4(text).is_some(), text.parse::<std::net::Ipv4Addr>().is_ok(), "{text}");
        }
    }

    #[test]
    fn dotted_prefixes_cover_whole_octets() {
        let net = |t: &str| u32::from(t.parse::<std::net::Ipv4Addr>().expect("v4"));
        assert_eq!(dotted_prefix(net("10.0.0.0"), 8), "10.");
        assert_eq!(dotted_prefix(net("10.20.0.0"), 16), "10.20.");
        assert_eq!(dotted_prefix(net("10.20.0.0"), 12), "10.");
        assert_eq!(dotted_prefix(net("192.168.1.0"), 24), "192.168.1.");
        assert_eq!(dotted_prefix(net("192.168.1.7"), 32), "192.168.1.7");
        assert_eq!(dotted_prefix(net("0.0.0.0"), 0), "");
    }

    #[test]
    fn private_and_loopback() {
        for ip in ["10.1.2.3", "172.16.0.1", "192.168.1.1", "fd00::1", "fc00::1"] {
            assert!(is_private(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["8.8.8.8", "172.32.0.1", "2001:db8::1", "127.0.0.1"] {
            assert!(!is_private(ip.parse().expect("ip")), "{ip}");
        }
    }
}
