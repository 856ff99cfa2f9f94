//! Reading back the float list columns (X and y) of corpus shards written by
//! [`crate::parquet::encode`], straight into the padded batch buffers.
//!
//! General-purpose Parquet readers decode the repetition and definition levels element by
//! element into Arrow list arrays and then copy the values again into the padded batch;
//! pyarrow also verifies page checksums at a few hundred MB/s. A shard's layout is known: one
//! data page (v1, PLAIN values, RLE levels, CRC32) per column chunk, lists of optional float32
//! cells that are never null. So a chunk is read with one positioned read, its checksum
//! verified, decompressed, its levels checked run by run against the lists the caller expects
//! (from the shard's `seq_len` and `d` columns), and each list's cells copied row by row into
//! its slot. Anything else (another writer's pages, a damaged file) is an error that names
//! what failed; the caller decides whether to fall back to a general reader.

use std::cell::RefCell;

use crate::parquet::{
    ENC_PLAIN, ENC_RLE, Levels, PAGE_DATA, T_BINARY, T_I16, T_I32, T_I64, T_LIST, T_STRUCT, list_row,
};

/// One column chunk: its byte range in the file and whether its page is zstd-compressed.
#[derive(Clone, Copy, Debug)]
pub struct ChunkRange {
    pub offset: u64,
    pub len: u64,
    pub zstd: bool,
}

/// Where the lists go: slot `slot` of `out`, a `(slots, t_max, f_max)` row-major buffer;
/// list `i` of the chunk has `rows[i] x cols[i]` cells.
pub struct Target<'a> {
    pub out: &'a mut [f32],
    pub t_max: usize,
    pub f_max: usize,
}

thread_local! {
    static CHUNK: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static BODY: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Reads chunks `chunks` (consecutive row groups from `first_group` on) of one float list
/// column of `file` and writes lists `skip .. skip + count` (counted over all the chunks,
/// `lists_per_chunk[c]` in chunk `c`) into slots `slot ..` of `target`; `rows` and `cols` give
/// every list's shape. Errors name the file's row group.
#[allow(clippy::too_many_arguments)]
pub fn read_lists(
    file: &std::fs::File,
    chunks: &[ChunkRange],
    lists_per_chunk: &[usize],
    rows: &[usize],
    cols: &[usize],
    skip: usize,
    count: usize,
    slot: usize,
    first_group: usize,
    target: &mut Target<'_>,
) -> Result<(), String> {
    let total = lists_per_chunk.iter().try_fold(0usize, |a, &n| a.checked_add(n));
    let end = skip.checked_add(count);
    if chunks.len() != lists_per_chunk.len()
        || total.is_none_or(|t| rows.len() != t || cols.len() != t || end.is_none_or(|e| e > t))
    {
        return Err(format!(
            "{} chunks with {lists_per_chunk:?} lists, {} shapes, {count} lists from {skip}",
            chunks.len(),
            rows.len()
        ));
    }
    let slot_len = target.t_max.checked_mul(target.f_max);
    let needed = slot.checked_add(count).zip(slot_len).and_then(|(n, l)| n.checked_mul(l));
    if needed.is_none_or(|n| n > target.out.len()) {
        return Err(format!("{count} lists from slot {slot} do not fit the output"));
    }
    let slot_len = slot_len.expect("checked above");
    if let Some(i) = (skip..skip + count).find(|&i| rows[i] > target.t_max || cols[i] > target.f_max) {
        return Err(format!("list {i} is {} x {}, larger than a slot", rows[i], cols[i]));
    }
    let size = file.metadata().map_err(|e| format!("cannot stat the file: {e}"))?.len();
    let mut first = 0;
    for (c, (chunk, &n)) in chunks.iter().zip(lists_per_chunk).enumerate() {
        let (lo, hi) = (first, first + n);
        first = hi;
        let (want_lo, want_hi) = (skip.max(lo), (skip + count).min(hi));
        if want_lo >= want_hi {
            continue;
        }
        read_chunk(file, size, chunk, &rows[lo..hi], &cols[lo..hi], |values, offsets| {
            for i in want_lo..want_hi {
                let (r, k) = (rows[i], cols[i]);
                let start = slot + (i - skip);
                let src = &values[offsets[i - lo]..offsets[i - lo] + 4 * r * k];
                let dst = &mut target.out[start * slot_len..(start + 1) * slot_len];
                for (row, cells) in src.chunks_exact(4 * k.max(1)).take(r).enumerate() {
                    let d = &mut dst[row * target.f_max..row * target.f_max + k];
                    for (v, b) in d.iter_mut().zip(cells.chunks_exact(4)) {
                        *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    }
                }
            }
        })
        .map_err(|e| format!("row group {}: {e}", first_group + c))?;
    }
    Ok(())
}

/// Reads, verifies and decodes one chunk of `file` (`size` bytes) whose lists have the given
/// shapes, and hands `then` the PLAIN value bytes and each list's byte offset in them.
fn read_chunk(
    file: &std::fs::File,
    size: u64,
    chunk: &ChunkRange,
    rows: &[usize],
    cols: &[usize],
    then: impl FnOnce(&[u8], &[usize]),
) -> Result<(), String> {
    // The range comes from the footer, which no checksum covers: check it against the file
    // before allocating it.
    if chunk.offset.checked_add(chunk.len).is_none_or(|end| end > size) {
        return Err(format!(
            "the column chunk at byte {} ({} bytes) runs past the end of the file ({size} bytes; truncated)",
            chunk.offset, chunk.len
        ));
    }
    let len = usize::try_from(chunk.len).map_err(|_| "column chunk too large".to_string())?;
    CHUNK.with_borrow_mut(|buf| {
        buf.resize(len, 0);
        read_exact_at(file, buf, chunk.offset)?;
        let mut t = Thrift { buf: &buf[..], pos: 0 };
        let h = PageHeader::parse(&mut t)?;
        let page = &buf[t.pos..];
        if h.kind != PAGE_DATA {
            return Err(format!("page type {} is not a data page", h.kind));
        }
        if h.compressed != page.len() {
            return Err(format!(
                "the page holds {} bytes, its chunk {} (truncated, or more than one page)",
                h.compressed,
                page.len()
            ));
        }
        let crc = h.crc.ok_or("the page has no checksum")?;
        let actual = crc32fast::hash(page) as i32;
        if actual != crc {
            return Err(format!("page checksum mismatch (CRC32 {:08x}, expected {:08x})", actual as u32, crc as u32));
        }
        if (h.encoding, h.def_encoding, h.rep_encoding) != (ENC_PLAIN, ENC_RLE, ENC_RLE) {
            return Err(format!(
                "encodings (values {}, levels {} / {}) are not PLAIN with RLE levels",
                h.encoding, h.def_encoding, h.rep_encoding
            ));
        }
        let mismatch = || "levels do not match the lists' seq_len x d".to_string();
        // Every cell is a level entry: more cells than the page's entries cannot match.
        let cells =
            rows.iter().zip(cols).try_fold(0usize, |a, (&r, &k)| r.checked_mul(k).and_then(|n| a.checked_add(n)));
        let cells = cells.filter(|&c| c <= h.num_values).ok_or_else(mismatch)?;
        // The levels take a few bytes per list; a larger size is a damaged header, not a
        // reason to allocate it.
        let bound = cells.checked_mul(4).and_then(|b| b.checked_add(16 * (rows.len() + 2)));
        if bound.is_none_or(|b| h.uncompressed > b) {
            return Err(format!("the page header claims {} bytes for {cells} cells", h.uncompressed));
        }
        BODY.with_borrow_mut(|body| {
            let body: &[u8] = if chunk.zstd {
                body.resize(h.uncompressed, 0);
                let n = zstd::bulk::decompress_to_buffer(page, &mut body[..]).map_err(|e| format!("zstd: {e}"))?;
                if n != h.uncompressed {
                    return Err(format!("the page decompressed to {n} bytes, its header says {}", h.uncompressed));
                }
                &body[..n]
            } else {
                if h.uncompressed != page.len() {
                    return Err(format!("an uncompressed page of {} bytes says {}", page.len(), h.uncompressed));
                }
                page
            };
            let mut at = 0;
            let rep = levels(body, &mut at, 1, h.num_values)?;
            let def = levels(body, &mut at, 2, h.num_values)?;
            // The levels the writer emits for these lists (each list's count is at most
            // `cells`, within the page's i32 entry count, so the u32 runs are exact).
            let (mut want_rep, mut want_def) = (Levels::new(), Levels::new());
            let entries: usize =
                rows.iter().zip(cols).map(|(&r, &k)| list_row(r * k, &mut want_def, &mut want_rep)).sum();
            if rep.runs != want_rep.runs || def.runs != want_def.runs {
                return Err(mismatch());
            }
            if entries != h.num_values {
                return Err(format!("{entries} level entries, the page header says {}", h.num_values));
            }
            let values = &body[at..];
            if values.len() != 4 * cells {
                return Err(format!("{} value bytes for {cells} cells", values.len()));
            }
            let mut offsets = Vec::with_capacity(rows.len());
            let mut o = 0;
            for (&r, &k) in rows.iter().zip(cols) {
                offsets.push(o);
                o += 4 * r * k;
            }
            then(values, &offsets);
            Ok(())
        })
    })
}

fn read_exact_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(buf, offset).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => "the file ends inside the column chunk (truncated)".to_string(),
            _ => format!("read failed: {e}"),
        })
    }
    #[cfg(not(unix))]
    {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = file;
        f.seek(SeekFrom::Start(offset)).map_err(|e| format!("seek failed: {e}"))?;
        f.read_exact(buf).map_err(|e| format!("read failed (truncated?): {e}"))
    }
}

/// Decodes one length-prefixed RLE / bit-packed hybrid level block of `bit_width` bits at
/// `*at` into merged (value, count) runs of at most `limit` entries (the page's count, an
/// i32, so the runs' u32 counts are exact; the last bit-packed group is padded to 8 values),
/// and moves `*at` past it.
fn levels(body: &[u8], at: &mut usize, bit_width: u32, limit: usize) -> Result<Levels, String> {
    let short = || "levels run past the page".to_string();
    let len_bytes = body.get(*at..*at + 4).ok_or_else(short)?;
    let len = u32::from_le_bytes(len_bytes.try_into().expect("4 bytes")) as usize;
    let block = body.get(*at + 4..*at + 4 + len).ok_or_else(short)?;
    *at += 4 + len;
    let mut runs = Levels::new();
    let (mut pos, mut left) = (0, limit);
    let value_bytes = bit_width.div_ceil(8) as usize;
    let mask = (1u32 << bit_width) - 1;
    while pos < block.len() {
        let header = varint(block, &mut pos).ok_or_else(short)?;
        if header & 1 == 0 {
            let n = usize::try_from(header >> 1).map_err(|_| short())?;
            if n > left {
                return Err(format!("levels hold more than the page's {limit} entries"));
            }
            left -= n;
            let bytes = block.get(pos..pos + value_bytes).ok_or_else(short)?;
            pos += value_bytes;
            let value = bytes.iter().rev().fold(0u32, |v, &b| (v << 8) | u32::from(b));
            if value > mask {
                return Err(format!("level {value} exceeds {bit_width} bits"));
            }
            runs.push(value, n);
        } else {
            // Bit-packed groups of 8 values, least significant bits first.
            let groups = usize::try_from(header >> 1).map_err(|_| short())?;
            let end = groups.checked_mul(bit_width as usize).and_then(|n| n.checked_add(pos));
            let bytes = block.get(pos..end.ok_or_else(short)?).ok_or_else(short)?;
            pos += bytes.len();
            let n = (groups * 8).min(left);
            left -= n;
            for i in 0..n {
                let bit = i * bit_width as usize;
                let word = u32::from(bytes[bit / 8]) | (u32::from(*bytes.get(bit / 8 + 1).unwrap_or(&0)) << 8);
                runs.push((word >> (bit % 8)) & mask, 1);
            }
        }
    }
    Ok(runs)
}

fn varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The fields of a Parquet `PageHeader` a data page v1 needs.
struct PageHeader {
    kind: i32,
    uncompressed: usize,
    compressed: usize,
    crc: Option<i32>,
    num_values: usize,
    encoding: i32,
    def_encoding: i32,
    rep_encoding: i32,
}

/// Thrift compact protocol, the reading side of the subset a page header uses.
struct Thrift<'a> {
    buf: &'a [u8],
    pos: usize,
}

// Compact-protocol types the writer never emits (its own are shared with it).
const T_BOOL_TRUE: u8 = 1;
const T_BOOL_FALSE: u8 = 2;
const T_BYTE: u8 = 3;
const T_DOUBLE: u8 = 7;
const T_SET: u8 = 10;
const T_MAP: u8 = 11;

impl Thrift<'_> {
    fn malformed(&self) -> String {
        format!("malformed page header at byte {}", self.pos)
    }

    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.buf.get(self.pos).ok_or_else(|| self.malformed())?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, String> {
        varint(self.buf, &mut self.pos).ok_or_else(|| self.malformed())
    }

    fn i32(&mut self) -> Result<i32, String> {
        let v = self.varint()?;
        i32::try_from((v >> 1) as i64 ^ -((v & 1) as i64)).map_err(|_| self.malformed())
    }

    fn size(&mut self) -> Result<usize, String> {
        usize::try_from(self.i32()?).map_err(|_| self.malformed())
    }

    /// The next field's (type, id), or None at the struct's end.
    fn field(&mut self, last: &mut i16) -> Result<Option<(u8, i16)>, String> {
        let b = self.byte()?;
        if b == 0 {
            return Ok(None);
        }
        let delta = (b >> 4) as i16;
        let id = if delta == 0 {
            i16::try_from(self.i32()?).map_err(|_| self.malformed())?
        } else {
            last.checked_add(delta).ok_or_else(|| self.malformed())?
        };
        *last = id;
        Ok(Some((b & 0x0f, id)))
    }

    fn skip(&mut self, kind: u8, depth: usize) -> Result<(), String> {
        if depth > 16 {
            return Err(self.malformed());
        }
        // Every element of a container takes at least one byte: a count beyond the bytes
        // left is damage, and stops here instead of spinning.
        let count = |t: &mut Self, n: u64| match usize::try_from(n) {
            Ok(n) if n <= t.buf.len().saturating_sub(t.pos) => Ok(n),
            _ => Err(t.malformed()),
        };
        match kind {
            T_BOOL_TRUE | T_BOOL_FALSE => {}
            T_BYTE => self.pos += 1,
            T_I16 | T_I32 | T_I64 => {
                self.varint()?;
            }
            T_DOUBLE => self.pos += 8,
            T_BINARY => {
                let n = self.varint()?;
                self.pos += count(self, n)?;
            }
            T_LIST | T_SET => {
                let h = self.byte()?;
                let n = if h >> 4 == 15 { self.varint()? } else { u64::from(h >> 4) };
                for _ in 0..count(self, n)? {
                    self.element(h & 0x0f, depth + 1)?;
                }
            }
            T_MAP => {
                let n = self.varint()?;
                let n = count(self, n)?;
                if n > 0 {
                    let kv = self.byte()?;
                    for _ in 0..n {
                        self.element(kv >> 4, depth + 1)?;
                        self.element(kv & 0x0f, depth + 1)?;
                    }
                }
            }
            T_STRUCT => {
                let mut last = 0;
                while let Some((k, _)) = self.field(&mut last)? {
                    self.skip(k, depth + 1)?;
                }
            }
            _ => return Err(self.malformed()),
        }
        if self.pos > self.buf.len() { Err(self.malformed()) } else { Ok(()) }
    }
}

impl Thrift<'_> {
    /// One element of a list, set or map: as a field, except that a boolean is a byte of its
    /// own there (in a field it lives in the type nibble).
    fn element(&mut self, kind: u8, depth: usize) -> Result<(), String> {
        if kind == T_BOOL_TRUE || kind == T_BOOL_FALSE { self.byte().map(drop) } else { self.skip(kind, depth) }
    }
}

impl PageHeader {
    fn parse(t: &mut Thrift<'_>) -> Result<PageHeader, String> {
        let mut h = PageHeader {
            kind: -1,
            uncompressed: 0,
            compressed: 0,
            crc: None,
            num_values: 0,
            encoding: -1,
            def_encoding: -1,
            rep_encoding: -1,
        };
        let (mut last, mut data_page) = (0, false);
        while let Some((kind, id)) = t.field(&mut last)? {
            match (id, kind) {
                (1, T_I32) => h.kind = t.i32()?,
                (2, T_I32) => h.uncompressed = t.size()?,
                (3, T_I32) => h.compressed = t.size()?,
                (4, T_I32) => h.crc = Some(t.i32()?),
                (5, T_STRUCT) => {
                    data_page = true;
                    let mut last = 0;
                    while let Some((kind, id)) = t.field(&mut last)? {
                        match (id, kind) {
                            (1, T_I32) => h.num_values = t.size()?,
                            (2, T_I32) => h.encoding = t.i32()?,
                            (3, T_I32) => h.def_encoding = t.i32()?,
                            (4, T_I32) => h.rep_encoding = t.i32()?,
                            _ => t.skip(kind, 1)?,
                        }
                    }
                }
                _ => t.skip(kind, 0)?,
            }
        }
        if !data_page {
            return Err("the page header has no data page header (not a v1 data page)".into());
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parquet::{Column, ColumnData, WriteOptions, encode};

    /// A shard of two float list columns, its row groups' x chunk ranges, and the padded data.
    fn shard(level: Option<i32>, dir: &std::path::Path) -> (std::path::PathBuf, Vec<f32>, Vec<usize>, Vec<usize>) {
        let (b, t, f) = (5, 6, 4);
        let rows = vec![6, 1, 3, 0, 5];
        let cols = vec![4, 2, 1, 3, 4];
        let data: Vec<f32> = (0..b * t * f).map(|i| (i as f32 * 0.37).sin() * 100.0).collect();
        let columns = [Column {
            name: "x",
            data: ColumnData::PaddedF32 { data: &data, t_max: t, f_max: f, rows: rows.clone(), cols: cols.clone() },
        }];
        let opts = WriteOptions { row_group: 2, zstd_level: level, key_value: vec![], created_by: "t".into() };
        let path = dir.join(format!("s{level:?}.parquet"));
        std::fs::write(&path, encode(&columns, &opts, 1).unwrap().to_vec()).unwrap();
        (path, data, rows, cols)
    }

    /// The byte ranges of the row groups' chunks, found as pyarrow's metadata gives them: each
    /// chunk starts at its page header, right after the previous one ends ("PAR1" first).
    fn ranges(path: &std::path::Path, zstd: bool) -> Vec<ChunkRange> {
        let bytes = std::fs::read(path).unwrap();
        let mut out = Vec::new();
        let mut at = 4;
        for _ in 0..3 {
            let mut t = Thrift { buf: &bytes[at..], pos: 0 };
            let h = PageHeader::parse(&mut t).unwrap();
            let len = t.pos + h.compressed;
            out.push(ChunkRange { offset: at as u64, len: len as u64, zstd });
            at += len;
        }
        out
    }

    #[test]
    fn lists_come_back_into_their_slots_bit_for_bit() {
        let dir = std::env::temp_dir().join(format!("tabfm-shard-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for level in [Some(-1), Some(3), None] {
            let (path, data, rows, cols) = shard(level, &dir);
            let chunks = ranges(&path, level.is_some());
            let file = std::fs::File::open(&path).unwrap();
            let (t, f) = (7, 5); // slots larger than the writer's
            // Lists 1..5 (skipping the first), into slots 2.. of a buffer of 7 slots.
            let mut out = vec![-9.0f32; 7 * t * f];
            let mut target = Target { out: &mut out, t_max: t, f_max: f };
            read_lists(&file, &chunks, &[2, 2, 1], &rows, &cols, 1, 4, 2, 0, &mut target).unwrap();
            for i in 1..5 {
                let slot = &out[(2 + i - 1) * t * f..(2 + i) * t * f];
                for r in 0..t {
                    for c in 0..f {
                        let want = if r < rows[i] && c < cols[i] { data[i * 6 * 4 + r * 4 + c] } else { -9.0 };
                        assert_eq!(slot[r * f + c].to_bits(), want.to_bits(), "{level:?}: list {i} ({r}, {c})");
                    }
                }
            }
            assert!(out[..2 * t * f].iter().chain(&out[6 * t * f..]).all(|&v| v == -9.0), "wrote outside its slots");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn damaged_chunks_and_wrong_shapes_are_errors_naming_what_failed() {
        let dir = std::env::temp_dir().join(format!("tabfm-shard-damage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (path, _, rows, cols) = shard(Some(1), &dir);
        let chunks = ranges(&path, true);
        let bytes = std::fs::read(&path).unwrap();
        let read = |bytes: &[u8], chunks: &[ChunkRange], rows: &[usize], cols: &[usize]| {
            let p = dir.join("damaged.parquet");
            std::fs::write(&p, bytes).unwrap();
            let mut out = vec![0.0f32; 5 * 6 * 4];
            let mut target = Target { out: &mut out, t_max: 6, f_max: 4 };
            read_lists(&std::fs::File::open(&p).unwrap(), chunks, &[2, 2, 1], rows, cols, 0, 5, 0, 0, &mut target)
        };
        assert!(read(&bytes, &chunks, &rows, &cols).is_ok());
        // A flipped byte inside the second chunk's page.
        let mut flipped = bytes.clone();
        let at = (chunks[1].offset + chunks[1].len - 3) as usize;
        flipped[at] ^= 0x40;
        let e = read(&flipped, &chunks, &rows, &cols).unwrap_err();
        assert!(e.contains("row group 1") && e.contains("checksum mismatch"), "{e}");
        // Errors count row groups in the file: the last two chunks alone, from group 1.
        let p = dir.join("damaged.parquet");
        let mut out = vec![0.0f32; 3 * 6 * 4];
        let mut target = Target { out: &mut out, t_max: 6, f_max: 4 };
        let file = std::fs::File::open(&p).unwrap();
        let e = read_lists(&file, &chunks[1..], &[2, 1], &rows[2..], &cols[2..], 0, 3, 0, 1, &mut target).unwrap_err();
        assert!(e.starts_with("row group 1: page checksum mismatch"), "{e}");
        // A file cut inside the last chunk.
        let e = read(&bytes[..(chunks[2].offset + 10) as usize], &chunks, &rows, &cols).unwrap_err();
        assert!(e.contains("row group 2") && e.contains("truncated"), "{e}");
        // Shapes that disagree with the stored lists.
        let mut wrong = cols.clone();
        wrong[2] = 2;
        let e = read(&bytes, &chunks, &rows, &wrong).unwrap_err();
        assert!(e.contains("levels do not match"), "{e}");
        // A range that is not one whole page.
        let mut short = chunks.clone();
        short[0].len -= 1;
        let e = read(&bytes, &short, &rows, &cols).unwrap_err();
        assert!(e.contains("row group 0") && e.contains("more than one page"), "{e}");
        // A range past the end of the file (a damaged footer), refused before allocating it.
        let mut past = chunks.clone();
        past[1].len = u64::MAX / 2;
        let e = read(&bytes, &past, &rows, &cols).unwrap_err();
        assert!(e.contains("row group 1") && e.contains("past the end of the file"), "{e}");
        // A list larger than the slots.
        let mut big = rows.clone();
        big[0] = 7;
        let e = read(&bytes, &chunks, &big, &cols).unwrap_err();
        assert!(e.contains("larger than a slot"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hybrid_levels_decode_rle_and_bit_packed_runs() {
        // Length 6: an RLE run of 5 threes, then one bit-packed group of 8 two-bit values.
        let mut body = vec![6, 0, 0, 0, 10, 3, 3];
        let packed: [u32; 8] = [3, 3, 1, 3, 0, 0, 0, 0];
        let word = packed.iter().enumerate().fold(0u32, |w, (i, &v)| w | (v << (2 * i)));
        body.extend_from_slice(&word.to_le_bytes()[..2]);
        body[0] = 5;
        let mut at = 0;
        let runs = levels(&body, &mut at, 2, 13).unwrap();
        assert_eq!(runs.runs, vec![(3, 7), (1, 1), (3, 1), (0, 4)]);
        assert_eq!(at, body.len());
        // The padding of the last group is not an entry of a page of 10.
        let mut at = 0;
        assert_eq!(levels(&body, &mut at, 2, 10).unwrap().runs, vec![(3, 7), (1, 1), (3, 1), (0, 1)]);
        // More entries than the page holds, and a block longer than the page.
        let mut at = 0;
        assert!(levels(&body, &mut at, 2, 4).unwrap_err().contains("more than the page's 4 entries"));
        let mut at = 0;
        assert!(levels(&[9, 0, 0, 0, 2], &mut at, 1, 100).is_err());
    }

    #[test]
    fn damaged_page_headers_are_errors_not_hangs() {
        let parse = |bytes: &[u8]| PageHeader::parse(&mut Thrift { buf: bytes, pos: 0 }).map(|_| ());
        let huge = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        // Field 6 a binary of 2^64 - 1 bytes; a list of 2^64 - 1 booleans; a map as large.
        for head in [[0x68u8].as_slice(), &[0x69, 0xf1], &[0x6b]] {
            let bytes = [head, &huge, &[0; 8]].concat();
            assert!(parse(&bytes).unwrap_err().contains("malformed page header"), "{head:?}");
        }
        // A field id that overflows, a header cut short, a header without a data page.
        assert!(parse(&[0x05, 0xfe, 0xff, 0x03, 0x00, 0x15, 0x00, 0x00]).unwrap_err().contains("malformed"));
        assert!(parse(&[0x15, 0x00, 0x15]).is_err());
        assert!(parse(&[0x15, 0x00, 0x00]).unwrap_err().contains("no data page header"));
        // Booleans in a list take a byte each: field 4 a list [true, false], then the data
        // page header {num_values: 1}.
        let ok = [0x49, 0x21, 0x01, 0x02, 0x1c, 0x15, 0x02, 0x00, 0x00];
        assert!(parse(&ok).is_ok());
    }
}
