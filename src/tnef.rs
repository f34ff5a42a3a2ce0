//! TNEF (`application/ms-tnef`, `winmail.dat`) → the files and body Outlook wrapped in it.
//! Pure and bounds-checked: every length is checked against the buffer, damaged or truncated
//! input yields what was readable up to the damage, checksums are not enforced (Outlook writes
//! wrong ones). Never panics, never allocates more than the input size, no I/O.
//!
//! Why not the `tnef` crate: 0.1.1 (2019) rejects a whole file on one bad checksum or unknown
//! attribute and does not read the MAPI property stream, which is where the long file names,
//! MIME types and `PR_ATTACH_DATA_OBJ` attachments live. No other maintained reader exists.
//!
//! Format: [MS-OXTNEF]. A stream is a signature, a key, then attributes
//! `level(1) id(4) length(4) data(length) checksum(2)`; level 1 is the message, level 2 an
//! attachment, and each attachment starts with `attAttachRendData`. `attMsgProps` and
//! `attAttachment` carry MAPI property lists ([MS-OXTNEF] §2.1.3.4).

use encoding_rs::{Encoding, UTF_16LE, WINDOWS_1252};

/// `TNEF_SIGNATURE`, little-endian ([MS-OXTNEF] §2.1.3.1).
const SIGNATURE: u32 = 0x223E_9F78;

// Attribute ids (low 16 bits; the high 16 bits are the attribute's type).
const ATT_BODY: u16 = 0x800C;
const ATT_MESSAGE_CLASS: u16 = 0x8008;
const ATT_ATTACH_DATA: u16 = 0x800F;
const ATT_ATTACH_TITLE: u16 = 0x8010;
const ATT_ATTACH_TRANSPORT_FILENAME: u16 = 0x9001;
const ATT_ATTACH_REND_DATA: u16 = 0x9002;
const ATT_MSG_PROPS: u16 = 0x9003;
const ATT_ATTACHMENT: u16 = 0x9005;
const ATT_OEM_CODEPAGE: u16 = 0x9007;

// MAPI property ids.
const PR_BODY: u16 = 0x1000;
const PR_RTF_COMPRESSED: u16 = 0x1009;
const PR_BODY_HTML: u16 = 0x1013;
const PR_DISPLAY_NAME: u16 = 0x3001;
const PR_ATTACH_DATA_OBJ: u16 = 0x3701;
const PR_ATTACH_FILENAME: u16 = 0x3704;
const PR_ATTACH_LONG_FILENAME: u16 = 0x3707;
const PR_ATTACH_MIME_TAG: u16 = 0x370E;
const PR_ATTACH_CONTENT_ID: u16 = 0x3712;
const PR_PREVIEW: u16 = 0x3FD9;
const PR_INTERNET_CPID: u16 = 0x3FDE;

// MAPI property types ([MS-OXCDATA] §2.11.1).
const PT_SHORT: u16 = 0x0002;
const PT_OBJECT: u16 = 0x000D;
const PT_STRING8: u16 = 0x001E;
const PT_UNICODE: u16 = 0x001F;
const PT_BINARY: u16 = 0x0102;
const MV_FLAG: u16 = 0x1000;

/// `IID_IMessage`: a `PR_ATTACH_DATA_OBJ` starting with it holds an embedded message.
const IID_IMESSAGE: [u8; 16] = [7, 3, 2, 0, 0, 0, 0, 0, 0xC0, 0, 0, 0, 0, 0, 0, 0x46];

/// What a TNEF stream holds.
#[derive(Debug, Default)]
pub struct Tnef<'a> {
    pub attachments: Vec<TnefAttachment<'a>>,
    /// Plain-text body (`PR_BODY` or `attBody`).
    pub body: Option<String>,
    /// HTML body (`PR_BODY_HTML`).
    pub html_body: Option<String>,
    /// `PR_PREVIEW`: the first lines of the body, which Outlook stores even when the body
    /// itself travels only as RTF or HTML.
    pub preview: Option<String>,
    /// A compressed RTF body is present (not decoded here).
    pub has_rtf_body: bool,
    /// `attMessageClass`, e.g. `IPM.Note`.
    pub message_class: Option<String>,
    /// False when the stream was damaged or truncated and reading stopped early.
    pub complete: bool,
}

/// One file inside the stream.
#[derive(Debug, Clone)]
pub struct TnefAttachment<'a> {
    /// Best file name: long file name, else short name, else title, else display name;
    /// `unknown.dat` when the stream names it nowhere. Never contains a path.
    pub name: String,
    /// `PR_ATTACH_MIME_TAG` when Outlook recorded one.
    pub content_type: Option<String>,
    pub content_id: Option<String>,
    /// The attachment's bytes (for an embedded message: the nested TNEF stream).
    pub data: &'a [u8],
    /// The attachment is an embedded Outlook message, not a file.
    pub embedded_message: bool,
}

/// Not a TNEF stream at all (wrong signature or shorter than the header).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a TNEF stream")]
pub struct NotTnef;

/// Read a TNEF stream. `Err` only when the signature is missing; damage after the header ends
/// reading with `complete == false` and keeps everything read so far.
pub fn parse(data: &[u8]) -> Result<Tnef<'_>, NotTnef> {
    let mut r = Reader::new(data);
    if r.u32() != Some(SIGNATURE) || r.u16().is_none() {
        return Err(NotTnef);
    }
    let mut out = Tnef { complete: true, ..Tnef::default() };
    let mut codepage: &'static Encoding = WINDOWS_1252;
    let mut current: Option<Partial<'_>> = None;

    while !r.is_empty() {
        // level(1) id(4) length(4) data checksum(2)
        let (Some(level), Some(id), Some(len)) = (r.u8(), r.u32(), r.u32()) else {
            out.complete = false; // trailing bytes too short for an attribute header
            break;
        };
        let Some(value) = r.take(len as usize) else {
            out.complete = false; // truncated: the attribute runs past the end
            break;
        };
        if r.u16().is_none() {
            out.complete = false; // checksum missing; the value itself is whole, keep it
        }
        let id = (id & 0xFFFF) as u16;
        match level {
            1 => match id {
                ATT_OEM_CODEPAGE => {
                    if let Some(cp) = Reader::new(value).u32() {
                        codepage = encoding_for(cp).unwrap_or(WINDOWS_1252);
                    }
                }
                ATT_MESSAGE_CLASS => out.message_class = Some(decode_8bit(value, codepage)),
                ATT_BODY => out.body = Some(decode_8bit(value, codepage)),
                ATT_MSG_PROPS => read_message_props(value, codepage, &mut out),
                _ => {}
            },
            2 => {
                if id == ATT_ATTACH_REND_DATA {
                    if let Some(done) = current.take() {
                        out.attachments.push(done.finish());
                    }
                    current = Some(Partial::default());
                    continue;
                }
                // Lenient: attachment attributes before any RendData still start an attachment.
                let att = current.get_or_insert_with(Partial::default);
                match id {
                    ATT_ATTACH_TITLE => att.title = Some(decode_8bit(value, codepage)),
                    ATT_ATTACH_TRANSPORT_FILENAME => att.transport = Some(decode_8bit(value, codepage)),
                    ATT_ATTACH_DATA => att.data = Some(value),
                    ATT_ATTACHMENT => read_attachment_props(value, codepage, att),
                    _ => {}
                }
            }
            _ => {
                out.complete = false; // not an attribute: garbage after the stream
                break;
            }
        }
    }
    if let Some(done) = current.take() {
        out.attachments.push(done.finish());
    }
    Ok(out)
}

/// Windows code page number → encoding; `None` for pages encoding_rs does not know.
fn encoding_for(cp: u32) -> Option<&'static Encoding> {
    u16::try_from(cp).ok().and_then(codepage::to_encoding)
}

#[derive(Default)]
struct Partial<'a> {
    title: Option<String>,
    transport: Option<String>,
    long_name: Option<String>,
    short_name: Option<String>,
    display_name: Option<String>,
    mime: Option<String>,
    content_id: Option<String>,
    data: Option<&'a [u8]>,
    embedded: bool,
}

impl<'a> Partial<'a> {
    fn finish(self) -> TnefAttachment<'a> {
        let name = [self.long_name, self.short_name, self.title, self.transport, self.display_name]
            .into_iter()
            .flatten()
            .map(|n| base_name(&n))
            .find(|n| !n.is_empty())
            .unwrap_or_else(|| "unknown.dat".to_string());
        TnefAttachment {
            name,
            content_type: self.mime.filter(|m| m.contains('/')),
            content_id: self.content_id.filter(|c| !c.is_empty()),
            data: self.data.unwrap_or_default(),
            embedded_message: self.embedded,
        }
    }
}

/// The last path component, without NULs and control characters.
fn base_name(name: &str) -> String {
    let name = name.rsplit(['/', '\\']).next().unwrap_or_default();
    name.chars().filter(|c| !c.is_control()).collect::<String>().trim().to_string()
}

fn read_message_props(value: &[u8], codepage: &'static Encoding, out: &mut Tnef<'_>) {
    let props = read_props(value);
    // PR_INTERNET_CPID names the charset of the HTML body bytes.
    let html_cp = props
        .iter()
        .find(|p| p.id == PR_INTERNET_CPID)
        .and_then(|p| p.int())
        .and_then(encoding_for)
        .unwrap_or(codepage);
    for p in &props {
        match p.id {
            PR_BODY => out.body = p.string(codepage).or(out.body.take()),
            PR_BODY_HTML => {
                out.html_body = match p.ptype {
                    PT_STRING8 | PT_UNICODE => p.string(codepage),
                    _ => p.bytes().map(|b| decode_8bit(b, html_cp)),
                }
            }
            PR_PREVIEW => out.preview = p.string(codepage),
            PR_RTF_COMPRESSED => out.has_rtf_body = true,
            _ => {}
        }
    }
}

fn read_attachment_props<'a>(value: &'a [u8], codepage: &'static Encoding, att: &mut Partial<'a>) {
    for p in read_props(value) {
        match p.id {
            PR_ATTACH_LONG_FILENAME => att.long_name = p.string(codepage),
            PR_ATTACH_FILENAME => att.short_name = p.string(codepage),
            PR_DISPLAY_NAME => att.display_name = p.string(codepage),
            PR_ATTACH_MIME_TAG => att.mime = p.string(codepage).map(|m| m.trim().to_ascii_lowercase()),
            PR_ATTACH_CONTENT_ID => att.content_id = p.string(codepage),
            PR_ATTACH_DATA_OBJ => {
                if let Some(b) = p.bytes() {
                    // [MS-OXTNEF] §2.1.3.4.1: a PtypObject value starts with the interface id.
                    if p.ptype == PT_OBJECT && b.len() >= 16 {
                        att.embedded = b[..16] == IID_IMESSAGE;
                        att.data = Some(&b[16..]);
                    } else {
                        att.data = Some(b);
                    }
                }
            }
            _ => {}
        }
    }
}

/// One MAPI property: id, type and its (first) raw value.
struct Prop<'a> {
    id: u16,
    ptype: u16,
    raw: &'a [u8],
}

impl<'a> Prop<'a> {
    fn string(&self, codepage: &'static Encoding) -> Option<String> {
        let s = match self.ptype {
            PT_UNICODE => UTF_16LE.decode_without_bom_handling(self.raw).0.into_owned(),
            PT_STRING8 => decode_8bit(self.raw, codepage),
            _ => return None,
        };
        Some(s.trim_end_matches('\0').to_string())
    }

    fn bytes(&self) -> Option<&'a [u8]> {
        matches!(self.ptype, PT_BINARY | PT_OBJECT | PT_STRING8 | PT_UNICODE).then_some(self.raw)
    }

    fn int(&self) -> Option<u32> {
        Reader::new(self.raw).u32()
    }
}

/// Read a MAPI property list ([MS-OXTNEF] §2.1.3.4): `count(4)` then for each property
/// `type(2) id(2)`, a name for named properties, and the value. Stops at the first property it
/// cannot read and returns the ones before it.
fn read_props(data: &[u8]) -> Vec<Prop<'_>> {
    let mut r = Reader::new(data);
    let mut out = Vec::new();
    let Some(count) = r.u32() else { return out };
    for _ in 0..count {
        let Some(p) = read_prop(&mut r) else { break };
        out.push(p);
    }
    out
}

fn read_prop<'a>(r: &mut Reader<'a>) -> Option<Prop<'a>> {
    let ptype = r.u16()?;
    let id = r.u16()?;
    if id >= 0x8000 {
        // Named property: GUID, kind, then a numeric id or a UTF-16 name padded to 4 bytes.
        r.take(16)?;
        match r.u32()? {
            0 => {
                r.u32()?;
            }
            _ => {
                let len = r.u32()? as usize;
                r.take(len)?;
                r.align4()?;
            }
        }
    }
    let base = ptype & !MV_FLAG;
    let variable = matches!(base, PT_STRING8 | PT_UNICODE | PT_BINARY | PT_OBJECT);
    // Variable-length values always carry a count; fixed ones only when multi-valued.
    let count = if variable || ptype & MV_FLAG != 0 { r.u32()? } else { 1 };
    let mut first: Option<&'a [u8]> = None;
    for _ in 0..count {
        let raw = if variable {
            let len = r.u32()? as usize;
            let v = r.take(len)?;
            r.align4()?;
            v
        } else {
            let size = fixed_size(base)?;
            let v = r.take(size)?;
            // PT_SHORT and PT_BOOLEAN occupy 4 bytes in the stream.
            if size < 4 {
                r.take(4 - size)?;
            }
            v
        };
        first.get_or_insert(raw);
    }
    Some(Prop { id, ptype: base, raw: first.unwrap_or_default() })
}

/// Size of a fixed-length MAPI value; `None` for types this reader does not know.
fn fixed_size(ptype: u16) -> Option<usize> {
    Some(match ptype {
        PT_SHORT | 0x000B => 2,              // PtypInteger16, PtypBoolean
        0x0001 | 0x0003 | 0x0004 | 0x000A => 4, // null, PtypInteger32, PtypFloating32, PtypErrorCode
        0x0005..=0x0007 | 0x0014 | 0x0040 => 8, // floating64, currency, apptime, int64, time
        0x0048 => 16,                        // PtypGuid
        _ => return None,
    })
}

fn decode_8bit(bytes: &[u8], codepage: &'static Encoding) -> String {
    let bytes = match bytes.iter().position(|&b| b == 0) {
        Some(i) => &bytes[..i],
        None => bytes,
    };
    codepage.decode_without_bom_handling(bytes).0.into_owned()
}

/// Little-endian cursor whose every read is bounds-checked.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }

    fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Skip padding to the next multiple of 4 (counted from the start of the value list).
    fn align4(&mut self) -> Option<()> {
        let pad = (4 - self.pos % 4) % 4;
        // Padding may be missing at the very end of a stream.
        let pad = pad.min(self.data.len() - self.pos.min(self.data.len()));
        self.take(pad).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One attribute with a correct checksum.
    fn attr(level: u8, id: u32, data: &[u8]) -> Vec<u8> {
        let mut v = vec![level];
        v.extend_from_slice(&id.to_le_bytes());
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(data);
        let sum = data.iter().fold(0u16, |s, &b| s.wrapping_add(b as u16));
        v.extend_from_slice(&sum.to_le_bytes());
        v
    }

    fn header() -> Vec<u8> {
        let mut v = SIGNATURE.to_le_bytes().to_vec();
        v.extend_from_slice(&[1, 0]);
        v
    }

    fn unicode_prop(id: u16, s: &str) -> Vec<u8> {
        let mut bytes: Vec<u8> = s.encode_utf16().chain([0]).flat_map(|u| u.to_le_bytes()).collect();
        let len = bytes.len() as u32;
        while !bytes.len().is_multiple_of(4) {
            bytes.push(0);
        }
        let mut v = PT_UNICODE.to_le_bytes().to_vec();
        v.extend_from_slice(&id.to_le_bytes());
        v.extend_from_slice(&1u32.to_le_bytes());
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(&bytes);
        v
    }

    #[test]
    fn long_file_name_from_mapi_props_wins_over_title() {
        let mut t = header();
        t.extend(attr(2, 0x0006_9002, &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
        t.extend(attr(2, 0x0001_8010, b"REPORT~1.PDF\0"));
        t.extend(attr(2, 0x0006_800F, b"%PDF-1.4 data"));
        let mut props = 2u32.to_le_bytes().to_vec();
        props.extend(unicode_prop(PR_ATTACH_LONG_FILENAME, "Quarterly report ä.pdf"));
        // A PT_LONG before the string exercises fixed-size values.
        props.extend_from_slice(&0x0003u16.to_le_bytes());
        props.extend_from_slice(&0x3705u16.to_le_bytes());
        props.extend_from_slice(&1u32.to_le_bytes());
        t.extend(attr(2, 0x0006_9005, &props));
        let tnef = parse(&t).unwrap();
        assert!(tnef.complete);
        assert_eq!(tnef.attachments.len(), 1);
        assert_eq!(tnef.attachments[0].name, "Quarterly report ä.pdf");
        assert_eq!(tnef.attachments[0].data, b"%PDF-1.4 data");
    }

    #[test]
    fn bad_signature_is_not_tnef_and_truncation_keeps_what_was_read() {
        assert_eq!(parse(b"").unwrap_err(), NotTnef);
        assert_eq!(parse(b"PK\x03\x04 zip file").unwrap_err(), NotTnef);
        let mut t = header();
        t.extend(attr(2, 0x0006_9002, &[0; 14]));
        t.extend(attr(2, 0x0001_8010, b"a.txt\0"));
        let full = t.len();
        t.extend(attr(2, 0x0006_800F, &[7; 100]));
        let cut = &t[..full + 40];
        let tnef = parse(cut).unwrap();
        assert!(!tnef.complete);
        assert_eq!(tnef.attachments.len(), 1);
        assert_eq!(tnef.attachments[0].name, "a.txt");
        assert!(tnef.attachments[0].data.is_empty());
    }

    #[test]
    fn hostile_lengths_and_counts_never_panic() {
        let mut t = header();
        // attAttachment claiming 4 billion properties with a huge string length inside.
        let mut props = u32::MAX.to_le_bytes().to_vec();
        props.extend_from_slice(&PT_BINARY.to_le_bytes());
        props.extend_from_slice(&0x3701u16.to_le_bytes());
        props.extend_from_slice(&u32::MAX.to_le_bytes());
        props.extend_from_slice(&u32::MAX.to_le_bytes());
        t.extend(attr(2, 0x0006_9005, &props));
        t.extend([2, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        let tnef = parse(&t).unwrap();
        assert!(!tnef.complete);
        assert_eq!(tnef.attachments.len(), 1);
        assert_eq!(tnef.attachments[0].name, "unknown.dat");
    }
}
