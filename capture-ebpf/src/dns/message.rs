//! Reading what a DNS response says about addresses: the question, and the
//! CNAME, A and AAAA records of its answer section.
//!
//! The bytes are untrusted. hickory-proto decodes the header, the question
//! and every name (it refuses compression pointers that do not point
//! backwards, so there are no loops, and names over 255 octets); this module
//! walks the answer records one by one, keeps the three types it needs and
//! skips the others by their length. Counts are not trusted: the walk stops
//! at the end of the bytes or after [`MAX_ANSWER_RECORDS`]. A message cut
//! short (by the kernel's copy limit, or a lost TCP segment) yields the records
//! that were complete before the cut.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flowsql_event::DomainName;
use hickory_proto::op::{Header, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::Name;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use super::name::domain_name;

/// Answer records read from one message at most; a real answer has a few.
pub const MAX_ANSWER_RECORDS: usize = 256;

const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;

/// Why a message taught us nothing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("not a DNS response")]
    NotAResponse,
    #[error("DNS response with opcode {0:?}, not a query answer")]
    NotAQueryAnswer(OpCode),
    #[error("DNS response with rcode {0}")]
    Failed(ResponseCode),
    #[error("DNS response without a question")]
    NoQuestion,
    #[error("malformed DNS response: {0}")]
    Malformed(String),
}

/// What a record of the answer section says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    Address(IpAddr),
    Cname(DomainName),
}

/// One useful answer record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerRecord {
    pub owner: DomainName,
    pub ttl: u32,
    pub data: RecordData,
}

/// The useful part of a DNS response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub question: DomainName,
    pub records: Vec<AnswerRecord>,
    /// The answer section ended early: a cut message or a malformed record.
    pub incomplete: bool,
}

fn malformed(error: impl std::fmt::Display) -> MessageError {
    MessageError::Malformed(error.to_string())
}

/// Reads one answer record; `Ok(None)` for a record of another type or class.
fn read_record(decoder: &mut BinDecoder<'_>) -> Result<Option<AnswerRecord>, MessageError> {
    let owner = Name::read(decoder).map_err(malformed)?;
    let record_type = decoder.read_u16().map_err(malformed)?.unverified(/* any type */);
    let class = decoder.read_u16().map_err(malformed)?.unverified(/* any class */);
    let ttl = decoder.read_u32().map_err(malformed)?.unverified(/* any ttl */);
    let rdata_len = usize::from(decoder.read_u16().map_err(malformed)?.unverified(/* checked below */));
    if rdata_len > decoder.len() {
        return Err(malformed(format!("record data of {rdata_len} bytes, {} left", decoder.len())));
    }
    let data = match (class, record_type) {
        (CLASS_IN, TYPE_A) if rdata_len == 4 => {
            let b = decoder.read_slice(4).map_err(malformed)?.unverified(/* 4 bytes */);
            Some(RecordData::Address(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))))
        }
        (CLASS_IN, TYPE_AAAA) if rdata_len == 16 => {
            let b = decoder.read_slice(16).map_err(malformed)?.unverified(/* 16 bytes */);
            let mut octets = [0u8; 16];
            octets.copy_from_slice(b);
            Some(RecordData::Address(IpAddr::V6(Ipv6Addr::from(octets))))
        }
        (CLASS_IN, TYPE_CNAME) => {
            let start = decoder.index();
            let target = Name::read(decoder).map_err(malformed)?;
            if decoder.index() - start != rdata_len {
                return Err(malformed("CNAME target does not fill its record"));
            }
            domain_name(&target).map(RecordData::Cname)
        }
        _ => {
            decoder.read_slice(rdata_len).map_err(malformed)?;
            None
        }
    };
    Ok(match (data, domain_name(&owner)) {
        (Some(data), Some(owner)) => Some(AnswerRecord { owner, ttl, data }),
        _ => None,
    })
}

/// Parses a DNS response message (without the TCP length prefix).
pub fn parse_response(message: &[u8]) -> Result<Answer, MessageError> {
    let mut decoder = BinDecoder::new(message);
    let header = Header::read(&mut decoder).map_err(malformed)?;
    if header.message_type != MessageType::Response {
        return Err(MessageError::NotAResponse);
    }
    if header.op_code != OpCode::Query {
        return Err(MessageError::NotAQueryAnswer(header.op_code));
    }
    if header.response_code != ResponseCode::NoError {
        return Err(MessageError::Failed(header.response_code));
    }
    if header.counts.queries == 0 {
        return Err(MessageError::NoQuestion);
    }
    let query = Query::read(&mut decoder).map_err(malformed)?;
    let question = domain_name(query.name()).ok_or(MessageError::NoQuestion)?;
    // Further questions (practically never sent) are read past.
    for _ in 1..header.counts.queries {
        Query::read(&mut decoder).map_err(malformed)?;
    }
    let mut records = Vec::new();
    let mut incomplete = false;
    for _ in 0..usize::from(header.counts.answers).min(MAX_ANSWER_RECORDS) {
        match read_record(&mut decoder) {
            Ok(Some(record)) => records.push(record),
            Ok(None) => {}
            Err(_) => {
                incomplete = true;
                break;
            }
        }
    }
    Ok(Answer { question, records, incomplete })
}

/// One name an address was given by an answer, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Association {
    pub ip: IpAddr,
    pub name: DomainName,
    /// Seconds the association is valid: the smallest TTL on the chain from
    /// this name down to the address record, so a CNAME expires before the
    /// address behind it when its own TTL is shorter.
    pub ttl: u32,
}

/// Longest CNAME chain followed from the question.
pub const MAX_CHAIN: usize = 16;

impl Answer {
    /// The names each address was given, in chain order: the question first,
    /// then each CNAME toward the address. Only records on the chain that
    /// starts at the question count: an answer cannot name addresses it was
    /// not asked about.
    pub fn associations(&self) -> Vec<Association> {
        // The chain: question -> CNAME target -> ..., with each link's TTL.
        let mut chain: Vec<(DomainName, u32)> = vec![(self.question.clone(), u32::MAX)];
        while chain.len() < MAX_CHAIN {
            let Some((current, _)) = chain.last() else { break };
            let next = self.records.iter().find_map(|r| match &r.data {
                RecordData::Cname(target) if r.owner == *current => Some((target.clone(), r.ttl)),
                _ => None,
            });
            match next {
                Some((target, ttl)) if !chain.iter().any(|(n, _)| *n == target) => {
                    // The link's TTL belongs to the name that owns the CNAME.
                    if let Some(last) = chain.last_mut() {
                        last.1 = ttl;
                    }
                    chain.push((target, u32::MAX));
                }
                _ => break,
            }
        }
        let mut out = Vec::new();
        for record in &self.records {
            let RecordData::Address(ip) = record.data else { continue };
            let Some(position) = chain.iter().position(|(n, _)| *n == record.owner) else { continue };
            // Walk up from the address owner: each name's validity is the
            // smallest TTL from it down to the address record.
            let mut ttl = record.ttl;
            let mut names = Vec::with_capacity(position + 1);
            for (name, link_ttl) in chain[..=position].iter().rev() {
                if *name != record.owner {
                    ttl = ttl.min(*link_ttl);
                }
                names.push(Association { ip, name: name.clone(), ttl });
            }
            names.reverse();
            out.extend(names);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Message;
    use hickory_proto::rr::rdata::{A, AAAA, CNAME};
    use hickory_proto::rr::{RData, Record, RecordType};

    fn name(text: &str) -> Name {
        Name::from_ascii(text).expect("name")
    }

    fn response(question: &str, answers: Vec<Record>) -> Vec<u8> {
        let mut message = Message::response(7, OpCode::Query);
        message.add_query(Query::query(name(question), RecordType::A));
        for record in answers {
            message.add_answer(record);
        }
        message.to_vec().expect("serializes")
    }

    fn a(owner: &str, ttl: u32, ip: &str) -> Record {
        Record::from_rdata(name(owner), ttl, RData::A(A(ip.parse().expect("v4"))))
    }

    fn cname(owner: &str, ttl: u32, target: &str) -> Record {
        Record::from_rdata(name(owner), ttl, RData::CNAME(CNAME(name(target))))
    }

    fn chain_of(answer: &Answer) -> Vec<(String, String, u32)> {
        answer.associations().into_iter().map(|a| (a.ip.to_string(), a.name.to_string(), a.ttl)).collect()
    }

    #[test]
    fn a_record_names_its_address() {
        let bytes = response("www.example.com.", vec![a("www.example.com.", 60, "192.0.2.1")]);
        let answer = parse_response(&bytes).expect("parses");
        assert_eq!(answer.question.as_ref(), "www.example.com");
        assert!(!answer.incomplete);
        assert_eq!(chain_of(&answer), vec![("192.0.2.1".into(), "www.example.com".into(), 60)]);
    }

    #[test]
    fn cname_chain_is_in_order_and_each_name_has_its_own_ttl() {
        let bytes = response(
            "A.test.",
            vec![
                cname("a.test.", 1, "b.test."),
                cname("b.test.", 30, "c.test."),
                a("c.test.", 60, "127.0.0.7"),
                AAAA_record("c.test.", 10, "2001:db8::7"),
            ],
        );
        let answer = parse_response(&bytes).expect("parses");
        assert_eq!(
            chain_of(&answer),
            vec![
                ("127.0.0.7".into(), "a.test".into(), 1),
                ("127.0.0.7".into(), "b.test".into(), 30),
                ("127.0.0.7".into(), "c.test".into(), 60),
                ("2001:db8::7".into(), "a.test".into(), 1),
                ("2001:db8::7".into(), "b.test".into(), 10),
                ("2001:db8::7".into(), "c.test".into(), 10),
            ]
        );
    }

    #[expect(non_snake_case, reason = "named after the record type")]
    fn AAAA_record(owner: &str, ttl: u32, ip: &str) -> Record {
        Record::from_rdata(name(owner), ttl, RData::AAAA(AAAA(ip.parse().expect("v6"))))
    }

    #[test]
    fn records_off_the_chain_name_nothing() {
        let bytes = response(
            "evil.test.",
            vec![
                a("evil.test.", 60, "192.0.2.66"),
                a("bank.test.", 60, "192.0.2.1"),
                cname("x.test.", 5, "evil.test."),
            ],
        );
        let answer = parse_response(&bytes).expect("parses");
        assert_eq!(chain_of(&answer), vec![("192.0.2.66".into(), "evil.test".into(), 60)]);
    }

    #[test]
    fn cname_loops_end() {
        let bytes = response(
            "a.test.",
            vec![
                cname("a.test.", 5, "b.test."),
                cname("b.test.", 5, "a.test."),
                a("b.test.", 5, "192.0.2.9"),
            ],
        );
        let answer = parse_response(&bytes).expect("parses");
        assert_eq!(
            chain_of(&answer),
            vec![("192.0.2.9".into(), "a.test".into(), 5), ("192.0.2.9".into(), "b.test".into(), 5)]
        );
    }

    #[test]
    fn a_cut_message_keeps_the_complete_records() {
        let bytes = response("a.test.", vec![a("a.test.", 60, "192.0.2.1"), a("a.test.", 60, "192.0.2.2")]);
        let cut = &bytes[..bytes.len() - 3];
        let answer = parse_response(cut).expect("parses the start");
        assert!(answer.incomplete);
        assert_eq!(chain_of(&answer), vec![("192.0.2.1".into(), "a.test".into(), 60)]);
    }

    #[test]
    fn failures_and_queries_teach_nothing() {
        let mut query = Message::query();
        query.add_query(Query::query(name("a.test."), RecordType::A));
        assert_eq!(parse_response(&query.to_vec().expect("bytes")), Err(MessageError::NotAResponse));
        let mut nx = Message::response(1, OpCode::Query);
        nx.metadata.response_code = ResponseCode::NXDomain;
        nx.add_query(Query::query(name("a.test."), RecordType::A));
        assert!(matches!(parse_response(&nx.to_vec().expect("bytes")), Err(MessageError::Failed(_))));
        assert!(parse_response(&[]).is_err());
        assert!(parse_response(&[0u8; 11]).is_err());
    }

    #[test]
    fn lying_counts_and_loops_in_compression_are_errors_not_hangs() {
        // Header: response, 1 question, 65535 answers; the question name is a
        // compression pointer to itself.
        let mut bytes = vec![0, 1, 0x81, 0x80, 0, 1, 0xff, 0xff, 0, 0, 0, 0];
        bytes.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(matches!(parse_response(&bytes), Err(MessageError::Malformed(_))));
        // A fine question, then 65535 claimed answers and none present.
        let mut bytes = response("a.test.", vec![]);
        bytes[6] = 0xff;
        bytes[7] = 0xff;
        let answer = parse_response(&bytes).expect("question parses");
        assert!(answer.incomplete && answer.records.is_empty());
    }
}
