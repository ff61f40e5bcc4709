//! DNS: from the responses the kernel programs copied to the names of each
//! address (docs/architecture.md, "Domains").
//!
//! ```text
//! DnsEvent (UDP message | TCP segment) --tcp::TcpDnsStreams--> message
//!   --message::parse_response--> Answer --associations--> cache::NameCache
//!                                                     \--> DomainObservation (domains table)
//! ```

pub mod cache;
pub mod message;
pub mod name;
pub mod tcp;

pub use cache::{NameCache, NameCacheConfig, NameCacheStats};
pub use message::{Answer, Association, MessageError, parse_response};
