//! The identifiers the library makes, all UUIDv7 from one generator
//! ([`uuid_v7_at`]): correlation ids (the middleware's, for requests that
//! arrive without an acceptable one), the row ids sinks give stored records,
//! and batch ids ([`BatchId`](crate::BatchId)).
//!
//! UUIDv7 because the ids sort like their timestamps (index-friendly row ids,
//! correlation ids that show when a request started) while 74 random bits keep
//! them unique without coordination between threads, processes or hosts.

use std::cell::RefCell;
use std::fmt;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::HeaderValue;

mod current;
#[cfg(feature = "axum")]
mod extract;

#[cfg(feature = "axum")]
pub use extract::MissingCorrelationId;

// ===== UUIDv7 =====

/// A UUIDv7 (RFC 9562) whose timestamp is `time` to the millisecond and whose
/// other 74 bits are random, as its 16 bytes (big-endian, as
/// `uuid::Uuid::from_bytes` takes them).
///
/// Sinks use it for row ids: built from the record's own timestamp, ids sort
/// like the rows' times and land at the right edge of a time-ordered index.
/// Times before the Unix epoch give the epoch.
///
/// The random bits come from a thread-local `fastrand` generator: no lock,
/// no shared counter, never the OS, so it can run on the request path. Ids
/// need to be unique, not unguessable; 74 random bits make a collision within
/// one millisecond practically impossible. Ids of the same millisecond are not
/// ordered among themselves; nothing relies on that order.
///
/// ```
/// use std::time::{Duration, SystemTime};
///
/// let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
/// let id = uuid::Uuid::from_bytes(metrics_core::uuid_v7_at(t));
/// assert_eq!(id.get_version_num(), 7);
/// assert_eq!(id.get_timestamp().unwrap().to_unix(), (1_700_000_000, 123_000_000));
/// ```
pub fn uuid_v7_at(time: SystemTime) -> [u8; 16] {
    uuid_v7_at_unix_millis(unix_millis(time))
}

/// Milliseconds since the Unix epoch (0 before it, saturating far after it).
pub(crate) fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// [`uuid_v7_at`] for a time already given as milliseconds since the epoch.
pub(crate) fn uuid_v7_at_unix_millis(millis: u64) -> [u8; 16] {
    // RFC 9562 layout, built by hand rather than with uuid's builder (which
    // takes its random bytes as a slice to copy): 48 bits of milliseconds,
    // version 7, 12 random bits, variant `10`, 62 random bits.
    let random = fastrand::u128(..);
    let high = (millis << 16) | 0x7000 | ((random >> 64) as u64 & 0x0fff);
    let low = (random as u64 & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&high.to_be_bytes());
    bytes[8..].copy_from_slice(&low.to_be_bytes());
    bytes
}

const UUID_LEN: usize = uuid::fmt::Hyphenated::LENGTH;

/// Lower-case hex digit pairs for every byte value: one table load per byte
/// instead of two nibble conversions.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut table = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = [DIGITS[i >> 4], DIGITS[i & 0xf]];
        i += 1;
    }
    table
};

/// `bytes` as a hyphenated lower-case UUID (`8-4-4-4-12` hex digits).
pub(crate) fn hyphenated(bytes: &[u8; 16]) -> [u8; UUID_LEN] {
    let mut text = [b'-'; UUID_LEN];
    let mut at = 0;
    for (i, byte) in bytes.iter().enumerate() {
        // Hyphens sit before bytes 4, 6, 8 and 10.
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        let pair = HEX_PAIRS[usize::from(*byte)];
        text[at] = pair[0];
        text[at + 1] = pair[1];
        at += 2;
    }
    text
}

// ===== CorrelationId =====

/// The correlation id of a request: the caller's `X-Correlation-ID` when it is
/// acceptable, otherwise a generated UUIDv7.
///
/// It wraps an [`http::HeaderValue`], so echoing it on the response and copying
/// it into the record are reference-count bumps, not string copies. Its bytes
/// always live in a small buffer of the id's own (shared by up to
/// [`Self::IDS_PER_BUFFER`] ids), never in the request's: a queued record must
/// not keep the connection's read buffer alive. Only visible ASCII is ever
/// stored, so [`CorrelationId::as_str`] cannot fail.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CorrelationId(HeaderValue);

impl CorrelationId {
    /// The longest correlation id accepted from a caller, in bytes.
    pub const MAX_LEN: usize = 128;

    /// How many generated ids share one buffer allocation.
    pub const IDS_PER_BUFFER: usize = 64;

    /// Accepts `value` as a correlation id when it is 1..=[`Self::MAX_LEN`]
    /// bytes of visible ASCII (`!`..=`~`); otherwise `None`.
    ///
    /// The bytes are copied into the thread's id buffer rather than shared:
    /// hyper parses header values as slices of the connection's read buffer
    /// (8 KiB and more), and a record queued during an outage would keep that
    /// whole buffer alive, about 8 KiB per record instead of the id's length.
    pub fn from_header(value: &HeaderValue) -> Option<Self> {
        let bytes = value.as_bytes();
        let acceptable = !bytes.is_empty()
            && bytes.len() <= Self::MAX_LEN
            && bytes.iter().all(|b| (b'!'..=b'~').contains(b));
        acceptable.then(|| Self(pooled_header_value(bytes)))
    }

    /// A fresh id: a UUIDv7 of the current time (see [`Self::generate_at`]).
    pub fn generate() -> Self {
        Self::generate_at(SystemTime::now())
    }

    /// A fresh id for a request that started at `time`: the text of a
    /// [`uuid_v7_at`] of `time`.
    ///
    /// Built for the request path:
    ///
    /// - the caller passes the wall clock it already read (the request's
    ///   timestamp), so no second clock read is needed;
    /// - the random bits come from [`uuid_v7_at`]'s thread-local generator;
    /// - the 36 characters are carved out of a per-thread buffer shared by
    ///   [`IDS_PER_BUFFER`](Self::IDS_PER_BUFFER) ids, so an id costs an
    ///   allocation only once per 64; the buffer is freed when its last id is
    ///   dropped. Echoing the id on a response or copying it into a record
    ///   is then a reference-count bump.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use metrics_core::CorrelationId;
    ///
    /// let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    /// let id = CorrelationId::generate_at(t);
    /// let uuid = uuid::Uuid::parse_str(id.as_str()).unwrap();
    /// assert_eq!(uuid.get_version_num(), 7);
    /// assert_eq!(uuid.get_timestamp().unwrap().to_unix(), (1_700_000_000, 123_000_000));
    /// ```
    pub fn generate_at(time: SystemTime) -> Self {
        Self::generate_at_unix_millis(unix_millis(time))
    }

    /// [`Self::generate_at`] for a time given as milliseconds since the Unix
    /// epoch, for callers that already hold the time as a duration since the
    /// epoch (it spares the checked `SystemTime` subtraction).
    ///
    /// ```
    /// use metrics_core::CorrelationId;
    ///
    /// let id = CorrelationId::generate_at_unix_millis(1_700_000_000_123);
    /// let uuid = uuid::Uuid::parse_str(id.as_str()).unwrap();
    /// assert_eq!(uuid.get_version_num(), 7);
    /// assert_eq!(uuid.get_timestamp().unwrap().to_unix(), (1_700_000_000, 123_000_000));
    /// ```
    pub fn generate_at_unix_millis(millis: u64) -> Self {
        let bytes = uuid_v7_at_unix_millis(millis);
        Self(pooled_header_value(&hyphenated(&bytes)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Construction guarantees visible ASCII; the fallback is unreachable.
        self.0.to_str().unwrap_or_default()
    }

    /// The id as a header value, for echoing on a response.
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }

    /// The id as a header value, without the reference-count bump of
    /// cloning [`Self::header_value`].
    pub fn into_header_value(self) -> HeaderValue {
        self.0
    }
}

thread_local! {
    // See `CorrelationId::generate_at` and `CorrelationId::from_header`: ids
    // are carved out of a per-thread buffer, because a `HeaderValue` needs
    // heap bytes and one allocation per id would be the largest cost of
    // making it.
    static ID_BUFFER: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// `text` (visible ASCII, at most `CorrelationId::MAX_LEN` bytes) as a header
/// value in the thread's id buffer.
fn pooled_header_value(text: &[u8]) -> HeaderValue {
    let shared = ID_BUFFER.try_with(|buf| {
        let mut buf = buf.borrow_mut();
        if buf.capacity() - buf.len() < text.len() {
            // A fresh buffer rather than growing this one: ids already carved
            // out of it keep it alive, and growing would copy them.
            *buf =
                BytesMut::with_capacity((UUID_LEN * CorrelationId::IDS_PER_BUFFER).max(text.len()));
        }
        buf.extend_from_slice(text);
        buf.split().freeze()
    });
    // Without the buffer (only while the thread is being torn down) the id
    // gets an allocation of its own.
    let bytes = shared.unwrap_or_else(|_| Bytes::copy_from_slice(text));
    // Visible ASCII is always a valid header value (the check scans the
    // bytes; no allocation: `Bytes` is taken as is).
    HeaderValue::from_maybe_shared(bytes)
        .unwrap_or_else(|_| HeaderValue::from_static("00000000-0000-0000-0000-000000000000"))
}

impl fmt::Debug for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_callers_id_does_not_keep_the_request_buffer_alive() {
        // What hyper does: header values are slices of the read buffer.
        let read_buffer = Bytes::from(vec![b'a'; 8 * 1024]);
        let header = HeaderValue::from_maybe_shared(read_buffer.slice(100..136)).unwrap();
        let id = CorrelationId::from_header(&header).unwrap();
        drop(header);
        assert!(
            read_buffer.is_unique(),
            "the id still holds the 8 KiB buffer it was read from"
        );
        assert_eq!(id.as_str(), "a".repeat(36));
        // Ids of any accepted length fit, one after another.
        let long = "x".repeat(CorrelationId::MAX_LEN);
        let ids: Vec<_> = (0..100)
            .map(|_| CorrelationId::from_header(&HeaderValue::from_str(&long).unwrap()).unwrap())
            .collect();
        assert!(ids.iter().all(|i| i.as_str() == long));
    }

    #[test]
    fn uuid_v7_carries_the_time_and_sorts_by_it() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let a = uuid::Uuid::from_bytes(uuid_v7_at(t));
        let b = uuid::Uuid::from_bytes(uuid_v7_at(t));
        assert_ne!(a, b);
        assert_eq!(a.get_version_num(), 7);
        assert_eq!(a.get_variant(), uuid::Variant::RFC4122);
        let (secs, nanos) = a.get_timestamp().unwrap().to_unix();
        assert_eq!((secs, nanos / 1_000_000), (1_700_000_000, 123));
        let later = uuid::Uuid::from_bytes(uuid_v7_at(t + Duration::from_millis(1)));
        assert!(later > a.max(b));
        let before_epoch = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
        let early = uuid::Uuid::from_bytes(uuid_v7_at(before_epoch));
        assert_eq!(early.get_timestamp().unwrap().to_unix(), (0, 0));
    }

    #[test]
    fn correlation_ids_are_the_text_of_the_shared_generator() {
        let id = CorrelationId::generate_at_unix_millis(0x0123_4567_89ab);
        let uuid = uuid::Uuid::parse_str(id.as_str()).unwrap();
        assert_eq!(uuid.get_version_num(), 7);
        assert_eq!(
            uuid.as_bytes()[..6],
            uuid_v7_at_unix_millis(0x0123_4567_89ab)[..6]
        );
    }

    #[test]
    fn correlation_id_accepts_visible_ascii_only() {
        assert!(CorrelationId::from_header(&HeaderValue::from_static("abc-123_X")).is_some());
        assert!(CorrelationId::from_header(&HeaderValue::from_static("has space")).is_none());
        assert!(CorrelationId::from_header(&HeaderValue::from_static("")).is_none());
        let long = "a".repeat(CorrelationId::MAX_LEN + 1);
        assert!(CorrelationId::from_header(&HeaderValue::from_str(&long).unwrap()).is_none());
        let max = "a".repeat(CorrelationId::MAX_LEN);
        assert!(CorrelationId::from_header(&HeaderValue::from_str(&max).unwrap()).is_some());
        let non_ascii = HeaderValue::from_bytes("caf\u{e9}".as_bytes()).unwrap();
        assert!(CorrelationId::from_header(&non_ascii).is_none());
    }

    #[test]
    fn hand_built_ids_match_uuid_formatting_and_layout() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..1_000 {
            let mut bytes = [0u8; 16];
            rng.fill(&mut bytes);
            let text = hyphenated(&bytes);
            let expected = uuid::Uuid::from_bytes(bytes).hyphenated().to_string();
            assert_eq!(std::str::from_utf8(&text).unwrap(), expected);
        }
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(0x0123_4567_89ab);
        for _ in 0..100 {
            let id = CorrelationId::generate_at(t);
            let uuid = uuid::Uuid::parse_str(id.as_str()).unwrap();
            assert_eq!(uuid.get_version_num(), 7);
            assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122);
            assert!(id.as_str().starts_with("01234567-89ab-7"), "{id}");
        }
    }

    #[test]
    fn generated_correlation_ids_are_uuids_and_distinct() {
        let a = CorrelationId::generate();
        let b = CorrelationId::generate();
        assert_ne!(a, b);
        assert!(uuid::Uuid::parse_str(a.as_str()).is_ok());
        assert_eq!(a.as_str().len(), 36);
    }
}
