//! [`AccessLogFormat`]: `--access-log-format`, gunicorn's access-log syntax
//! (`%(h)s "%(r)s" %(s)s %(b)s`), parsed once at start-up into segments that each request
//! only fills in.

use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};

/// An access-log line in gunicorn's syntax: text with `%(atom)s` placeholders, `%%` for a
/// percent sign.
///
/// | atom | value |
/// |---|---|
/// | `h` | client IP address (`-` for a Unix socket peer) |
/// | `l` | `-` |
/// | `u` | user name: `-` (authentication is the app's) |
/// | `t` | time the request arrived, `[10/Oct/2000:13:55:36 +0000]` (UTC) |
/// | `r` | request line, `GET /path?q=1 HTTP/1.1` |
/// | `m`, `U`, `q`, `H` | method, path, query string, protocol |
/// | `s` | status code |
/// | `b` | response body bytes, `-` when none |
/// | `B` | response body bytes, `0` when none |
/// | `f`, `a` | `referer` and `user-agent` request headers |
/// | `T`, `M`, `D` | request time in whole seconds, milliseconds, microseconds |
/// | `L` | request time in seconds with six decimals |
/// | `p` | process id, `<1234>` |
/// | `{name}i`, `{name}o` | a request, response header (`-` when absent) |
///
/// ```
/// let format: rust_asgi_server::AccessLogFormat = r#"%(h)s "%(r)s" %(s)s %(b)s"#.parse()?;
/// # Ok::<(), rust_asgi_server::AccessLogFormatError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLogFormat {
    segments: Vec<Segment>,
    /// The request headers the segments show, captured when the request arrives.
    request_headers: Vec<HeaderName>,
    /// The response headers the segments show, captured when the response starts.
    response_headers: Vec<HeaderName>,
}

/// Why a `--access-log-format` was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccessLogFormatError {
    /// `%(x)s` with an atom gunicorn's syntax does not have (or this server does not log).
    UnknownAtom(String),
    /// `%({name}i)s` or `%({name}o)s` with a name no header can have.
    BadHeaderName(String),
    /// A `%` that starts neither `%(atom)s` nor `%%`, or a placeholder left open.
    Malformed {
        /// Byte offset of the `%` in the format.
        at: usize,
    },
}

impl fmt::Display for AccessLogFormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccessLogFormatError::UnknownAtom(atom) => write!(
                f,
                "unknown atom %({atom})s; known: h l u t r m U q H s b B f a T M D L p, \
                 %({{header}}i)s, %({{header}}o)s"
            ),
            AccessLogFormatError::BadHeaderName(name) => {
                write!(f, "{name:?} is not a header name")
            }
            AccessLogFormatError::Malformed { at } => write!(
                f,
                "the % at byte {at} starts neither %(atom)s nor %% (write %% for a percent sign)"
            ),
        }
    }
}

impl std::error::Error for AccessLogFormatError {}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Text(String),
    ClientAddress,
    Dash,
    ArrivalTime,
    RequestLine,
    Method,
    Path,
    Query,
    Protocol,
    Status,
    BytesOrDash,
    Bytes,
    Seconds,
    Milliseconds,
    Microseconds,
    DecimalSeconds,
    ProcessId,
    /// Index into the captured request headers.
    RequestHeader(usize),
    /// Index into the captured response headers.
    ResponseHeader(usize),
}

impl FromStr for AccessLogFormat {
    type Err = AccessLogFormatError;

    fn from_str(format: &str) -> Result<Self, Self::Err> {
        let mut parsed = AccessLogFormat {
            segments: Vec::new(),
            request_headers: Vec::new(),
            response_headers: Vec::new(),
        };
        let mut text = String::new();
        let mut rest = format;
        while let Some(percent) = rest.find('%') {
            text.push_str(&rest[..percent]);
            let at = format.len() - rest.len() + percent;
            let after = &rest[percent + 1..];
            if let Some(after) = after.strip_prefix('%') {
                text.push('%');
                rest = after;
                continue;
            }
            let (atom, after) = after
                .strip_prefix('(')
                .and_then(|inner| inner.split_once(')'))
                .and_then(|(atom, after)| Some((atom, after.strip_prefix('s')?)))
                .ok_or(AccessLogFormatError::Malformed { at })?;
            let segment = parsed.segment(atom)?;
            if !text.is_empty() {
                parsed
                    .segments
                    .push(Segment::Text(std::mem::take(&mut text)));
            }
            parsed.segments.push(segment);
            rest = after;
        }
        text.push_str(rest);
        if !text.is_empty() {
            parsed.segments.push(Segment::Text(text));
        }
        Ok(parsed)
    }
}

impl AccessLogFormat {
    fn segment(&mut self, atom: &str) -> Result<Segment, AccessLogFormatError> {
        let header = |name: &str| {
            HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|_| AccessLogFormatError::BadHeaderName(name.to_owned()))
        };
        if let Some(header_atom) = atom.strip_prefix('{') {
            return match header_atom.rsplit_once('}') {
                Some((name, "i")) => Ok(Segment::RequestHeader(Self::index_of(
                    &mut self.request_headers,
                    header(name)?,
                ))),
                Some((name, "o")) => Ok(Segment::ResponseHeader(Self::index_of(
                    &mut self.response_headers,
                    header(name)?,
                ))),
                _ => Err(AccessLogFormatError::UnknownAtom(atom.to_owned())),
            };
        }
        Ok(match atom {
            "h" => Segment::ClientAddress,
            "l" | "u" => Segment::Dash,
            "t" => Segment::ArrivalTime,
            "r" => Segment::RequestLine,
            "m" => Segment::Method,
            "U" => Segment::Path,
            "q" => Segment::Query,
            "H" => Segment::Protocol,
            "s" => Segment::Status,
            "b" => Segment::BytesOrDash,
            "B" => Segment::Bytes,
            "f" => Segment::RequestHeader(Self::index_of(
                &mut self.request_headers,
                http::header::REFERER,
            )),
            "a" => Segment::RequestHeader(Self::index_of(
                &mut self.request_headers,
                http::header::USER_AGENT,
            )),
            "T" => Segment::Seconds,
            "M" => Segment::Milliseconds,
            "D" => Segment::Microseconds,
            "L" => Segment::DecimalSeconds,
            "p" => Segment::ProcessId,
            _ => return Err(AccessLogFormatError::UnknownAtom(atom.to_owned())),
        })
    }

    fn index_of(names: &mut Vec<HeaderName>, name: HeaderName) -> usize {
        names
            .iter()
            .position(|known| *known == name)
            .unwrap_or_else(|| {
                names.push(name);
                names.len() - 1
            })
    }

    /// The values of the request headers this format shows, in the order it indexes them.
    pub(super) fn request_headers(&self, headers: &HeaderMap) -> Vec<Option<HeaderValue>> {
        Self::capture(&self.request_headers, headers)
    }

    /// The values of the response headers this format shows, in the order it indexes them.
    pub(super) fn response_headers(&self, headers: &HeaderMap) -> Vec<Option<HeaderValue>> {
        Self::capture(&self.response_headers, headers)
    }

    fn capture(names: &[HeaderName], headers: &HeaderMap) -> Vec<Option<HeaderValue>> {
        names
            .iter()
            .map(|name| headers.get(name).cloned())
            .collect()
    }

    /// The line of `exchange`, written as it is displayed.
    pub(super) fn line<'a>(&'a self, exchange: &'a Exchange<'a>) -> impl fmt::Display + 'a {
        Line {
            format: self,
            exchange,
        }
    }
}

/// What one request and its response were, as the access log knows them.
pub(super) struct Exchange<'a> {
    pub method: &'a Method,
    pub path_and_query: &'a str,
    pub version: Version,
    pub client: Option<SocketAddr>,
    pub arrived: SystemTime,
    pub elapsed: Duration,
    pub status: StatusCode,
    pub bytes: u64,
    /// Indexed as [`AccessLogFormat::request_headers`] returned them.
    pub request_headers: &'a [Option<HeaderValue>],
    /// Indexed as [`AccessLogFormat::response_headers`] returned them.
    pub response_headers: &'a [Option<HeaderValue>],
}

struct Line<'a> {
    format: &'a AccessLogFormat,
    exchange: &'a Exchange<'a>,
}

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exchange = self.exchange;
        let (path, query) = exchange
            .path_and_query
            .split_once('?')
            .unwrap_or((exchange.path_and_query, ""));
        for segment in &self.format.segments {
            match segment {
                Segment::Text(text) => f.write_str(text)?,
                Segment::ClientAddress => match exchange.client {
                    Some(client) => write!(f, "{}", client.ip())?,
                    None => f.write_char('-')?,
                },
                Segment::Dash => f.write_char('-')?,
                Segment::ArrivalTime => write_clf_time(f, exchange.arrived)?,
                Segment::RequestLine => write!(
                    f,
                    "{} {} {:?}",
                    exchange.method, exchange.path_and_query, exchange.version
                )?,
                Segment::Method => f.write_str(exchange.method.as_str())?,
                Segment::Path => f.write_str(path)?,
                Segment::Query => f.write_str(query)?,
                Segment::Protocol => write!(f, "{:?}", exchange.version)?,
                Segment::Status => write!(f, "{}", exchange.status.as_u16())?,
                Segment::BytesOrDash if exchange.bytes == 0 => f.write_char('-')?,
                Segment::BytesOrDash | Segment::Bytes => write!(f, "{}", exchange.bytes)?,
                Segment::Seconds => write!(f, "{}", exchange.elapsed.as_secs())?,
                Segment::Milliseconds => write!(f, "{}", exchange.elapsed.as_millis())?,
                Segment::Microseconds => write!(f, "{}", exchange.elapsed.as_micros())?,
                // Truncated, as gunicorn writes it, so that it agrees with D.
                Segment::DecimalSeconds => write!(
                    f,
                    "{}.{:06}",
                    exchange.elapsed.as_secs(),
                    exchange.elapsed.subsec_micros()
                )?,
                Segment::ProcessId => write!(f, "<{}>", std::process::id())?,
                Segment::RequestHeader(index) => {
                    write_header(f, exchange.request_headers.get(*index))?;
                }
                Segment::ResponseHeader(index) => {
                    write_header(f, exchange.response_headers.get(*index))?;
                }
            }
        }
        Ok(())
    }
}

fn write_header(f: &mut fmt::Formatter<'_>, value: Option<&Option<HeaderValue>>) -> fmt::Result {
    match value.and_then(Option::as_ref) {
        Some(value) => f.write_str(&String::from_utf8_lossy(value.as_bytes())),
        None => f.write_char('-'),
    }
}

/// `[10/Oct/2000:13:55:36 +0000]`, the Common Log Format's time, in UTC: a local offset
/// cannot be read safely once threads run, and servers in containers log UTC anyway.
fn write_clf_time(f: &mut fmt::Formatter<'_>, at: SystemTime) -> fmt::Result {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let at = time::OffsetDateTime::from(at);
    write!(
        f,
        "[{:02}/{}/{}:{:02}:{:02}:{:02} +0000]",
        at.day(),
        MONTHS[usize::from(u8::from(at.month())) - 1],
        at.year(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(format: &str, exchange: &Exchange<'_>) -> String {
        format
            .parse::<AccessLogFormat>()
            .unwrap()
            .line(exchange)
            .to_string()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    #[test]
    fn every_atom_renders_from_the_exchange() {
        let format: AccessLogFormat = "%(h)s %(l)s %(u)s %(t)s \"%(r)s\" %(m)s %(U)s %(q)s \
             %(H)s %(s)s %(b)s %(B)s \"%(f)s\" \"%(a)s\" %(T)s %(M)s %(D)s %(L)s %(p)s \
             %({X-Trace}i)s %({content-type}o)s %({x-missing}o)s 100%%"
            .parse()
            .unwrap();
        let request = format.request_headers(&headers(&[
            ("referer", "https://example.com/"),
            ("user-agent", "curl/8"),
            ("x-trace", "abc"),
        ]));
        let response = format.response_headers(&headers(&[("content-type", "text/plain")]));
        let exchange = Exchange {
            method: &Method::POST,
            path_and_query: "/items/1?full=yes",
            version: Version::HTTP_11,
            client: Some("10.1.2.3:5555".parse().unwrap()),
            arrived: SystemTime::UNIX_EPOCH + Duration::from_secs(971_185_336),
            elapsed: Duration::from_micros(2_345_678),
            status: StatusCode::CREATED,
            bytes: 42,
            request_headers: &request,
            response_headers: &response,
        };
        assert_eq!(
            format.line(&exchange).to_string(),
            format!(
                "10.1.2.3 - - [10/Oct/2000:13:42:16 +0000] \"POST /items/1?full=yes HTTP/1.1\" \
                 POST /items/1 full=yes HTTP/1.1 201 42 42 \"https://example.com/\" \"curl/8\" \
                 2 2345 2345678 2.345678 <{}> abc text/plain - 100%",
                std::process::id()
            )
        );
    }

    #[test]
    fn absent_values_are_dashes_and_no_bytes_is_a_dash_or_zero() {
        let exchange = Exchange {
            method: &Method::GET,
            path_and_query: "/",
            version: Version::HTTP_2,
            client: None,
            arrived: SystemTime::UNIX_EPOCH,
            elapsed: Duration::ZERO,
            status: StatusCode::NO_CONTENT,
            bytes: 0,
            request_headers: &[None, None],
            response_headers: &[],
        };
        assert_eq!(
            render("%(h)s %(b)s %(B)s %(f)s %(a)s %(q)s| %(r)s", &exchange),
            "- - 0 - - | GET / HTTP/2.0"
        );
    }

    #[test]
    fn unknown_atoms_and_stray_percents_are_refused() {
        let error = |format: &str| format.parse::<AccessLogFormat>().unwrap_err();
        assert_eq!(
            error("%(h)s %(x)s"),
            AccessLogFormatError::UnknownAtom("x".into())
        );
        assert_eq!(
            error("%({PATH}e)s"),
            AccessLogFormatError::UnknownAtom("{PATH}e".into())
        );
        assert_eq!(
            error("%({bad name}i)s"),
            AccessLogFormatError::BadHeaderName("bad name".into())
        );
        assert_eq!(error("50% off"), AccessLogFormatError::Malformed { at: 2 });
        assert_eq!(error("%(h)d"), AccessLogFormatError::Malformed { at: 0 });
        assert_eq!(
            error("%(h)d %(s)s"),
            AccessLogFormatError::Malformed { at: 0 }
        );
        assert_eq!(error("%(h"), AccessLogFormatError::Malformed { at: 0 });
        assert!(error("%(zz)s").to_string().contains("%(zz)s"));
    }

    #[test]
    fn text_is_kept_and_each_header_is_captured_once() {
        let format: AccessLogFormat = "a %(f)s %({Referer}i)s b".parse().unwrap();
        assert_eq!(format.request_headers, [http::header::REFERER]);
        assert_eq!(format.segments.first(), Some(&Segment::Text("a ".into())));
        assert_eq!(format.segments.last(), Some(&Segment::Text(" b".into())));
    }
}
