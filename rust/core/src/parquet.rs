//! A small Parquet writer for corpus shards.
//!
//! A generated batch is written straight from the core's padded buffers: the active cells of
//! each dataset are copied once into page buffers, the pages of all row groups and columns are
//! zstd-compressed in parallel on the tabfm encoding pool, and the file is hashed (XXH3-128) while it is
//! still in memory. General-purpose writers spend most of their time building Arrow arrays and
//! computing nested-list levels element by element; here every level run is known in advance
//! (each dataset is one non-null list), so levels cost a few bytes per dataset.
//!
//! What is written, and only this: format version 2 files with one data page (v1, PLAIN
//! values, RLE levels, CRC32) per column chunk, no dictionary, no statistics; columns are
//! optional scalars (int64, int32 with nulls, boolean, UTF-8 strings with nulls) or optional
//! lists of optional float32 / int32 in the standard three-level LIST layout. An Arrow schema
//! can be attached as key-value metadata (`ARROW:schema`) so that Arrow readers restore it.

use rayon::prelude::*;
use std::cell::RefCell;
use xxhash_rust::xxh3::Xxh3;

/// An XXH3-128 digest in its canonical form: 32 hex digits, high half first.
fn hex128(v: u128) -> String {
    format!("{v:032x}")
}

/// The XXH3-128 digest of a file (the shard checksum of corpus records), read in 1 MiB blocks.
pub fn file_digest(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut h = Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(hex128(h.digest128())),
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The rows of one column, for every dataset of the shard.
pub enum ColumnData<'a> {
    Int64(Vec<i64>),
    /// `None` is a null.
    Int32(Vec<Option<i32>>),
    Bool(Vec<bool>),
    /// `None` is a null.
    Utf8(Vec<Option<&'a str>>),
    /// Row `b` is the list of `rows[b] x cols[b]` cells (row-major) of dataset `b` in a
    /// zero-padded `(B, t_max, f_max)` array: the active cells only.
    PaddedF32 {
        data: &'a [f32],
        t_max: usize,
        f_max: usize,
        rows: Vec<usize>,
        cols: Vec<usize>,
    },
    ListI32(Vec<Vec<i32>>),
}

pub struct Column<'a> {
    pub name: &'a str,
    pub data: ColumnData<'a>,
}

pub struct WriteOptions {
    /// Datasets per row group (readers fetch row groups, so partial reads stay small).
    pub row_group: usize,
    /// zstd level (negative levels are zstd's fast modes); `None` writes uncompressed pages.
    pub zstd_level: Option<i32>,
    pub key_value: Vec<(String, String)>,
    pub created_by: String,
}

/// An encoded file, kept as its parts (magic, page headers and pages, footer) so that it is
/// never copied into one buffer, and its XXH3-128 digest (32 hex digits, as `xxhsum -H2`
/// prints it). The digest detects damaged and truncated shards, not tampering; a
/// non-cryptographic hash does that at a few GB/s per core, next to which BLAKE3 (1.4 GB/s)
/// or sha256 would cost a sizeable share of writing a shard at zstd's fast levels.
pub struct Encoded {
    parts: Vec<Vec<u8>>,
    pub digest: String,
}

impl Drop for Encoded {
    fn drop(&mut self) {
        SPARE.put(std::mem::take(&mut self.parts));
    }
}

/// Compressed pages of dropped files, kept for the next shard's pages. A shard's float pages
/// are megabytes: freshly allocated, each is mapped anew and faulted in (and zeroed) by the
/// kernel page by page, which costs about a tenth of encoding it; recycled buffers are warm.
struct Spare {
    buffers: std::sync::Mutex<Vec<Vec<u8>>>,
    max_bytes: usize,
}

/// Buffers smaller than this come from the allocator's warm heap anyway.
const SPARE_MIN: usize = 1 << 16;

static SPARE: Spare = Spare::new(64 << 20); // about two shards' float pages

impl Spare {
    const fn new(max_bytes: usize) -> Spare {
        Spare { buffers: std::sync::Mutex::new(Vec::new()), max_bytes }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.buffers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn put(&self, parts: Vec<Vec<u8>>) {
        let mut spare = self.lock();
        let mut kept: usize = spare.iter().map(Vec::capacity).sum();
        for p in parts {
            if p.capacity() >= SPARE_MIN && kept + p.capacity() <= self.max_bytes {
                kept += p.capacity();
                spare.push(p);
            }
        }
    }

    /// An empty buffer of at least `capacity` bytes, recycled when one fits.
    fn take(&self, capacity: usize) -> Vec<u8> {
        if capacity >= SPARE_MIN {
            let mut spare = self.lock();
            // The smallest that fits, so that large buffers stay for large pages.
            let fit =
                (0..spare.len()).filter(|&i| spare[i].capacity() >= capacity).min_by_key(|&i| spare[i].capacity());
            if let Some(i) = fit {
                let mut buf = spare.swap_remove(i);
                buf.clear();
                return buf;
            }
        }
        Vec::with_capacity(capacity)
    }
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.parts.iter().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn write_to(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        self.parts.iter().try_for_each(|p| w.write_all(p))
    }

    pub fn to_vec(&self) -> Vec<u8> {
        self.parts.concat()
    }

    /// Writes the file to `path` (created or truncated) and syncs it to the device.
    ///
    /// On Linux the bytes bypass the page cache (`O_DIRECT`) where the filesystem allows it.
    /// A shard is synced at once and mostly read later by other processes or machines, so
    /// caching it buys little, while filling fresh page-cache pages costs the kernel more than
    /// compressing them: on a 2-core VM, 33 ms of system time per 13.6 MB shard against 0.5 ms
    /// for a direct write. Filesystems that refuse direct I/O (tmpfs before Linux 6.6, some
    /// network mounts) get a buffered write; the file's bytes are the same either way.
    pub fn write_file(&self, path: &std::path::Path) -> std::io::Result<()> {
        #[cfg(target_os = "linux")]
        if let Some(done) = direct::write_file(&self.parts, path) {
            return done;
        }
        self.write_buffered(path)
    }

    fn write_buffered(&self, path: &std::path::Path) -> std::io::Result<()> {
        let mut file = std::fs::File::create(path)?;
        self.write_to(&mut file)?;
        file.sync_all()
    }
}

#[cfg(target_os = "linux")]
mod direct {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    /// Buffer address, length and file offset of direct I/O must be multiples of the logical
    /// block size: 4096 covers 512-byte and 4 KiB devices.
    const ALIGN: usize = 4096;
    /// The aligned staging buffer the parts are gathered into, written one block at a time.
    pub(super) const STAGE: usize = 4 << 20;

    /// `None` when the filesystem refuses direct I/O (`EINVAL` as open(2) documents it, or
    /// `EOPNOTSUPP` from some FUSE filesystems): the caller writes buffered, over whatever
    /// was written so far.
    pub(super) fn write_file(parts: &[Vec<u8>], path: &std::path::Path) -> Option<std::io::Result<()>> {
        // One staging buffer serves every write, warm; a concurrent writer takes a fresh one.
        static STAGING: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());
        let mut fresh = Vec::new();
        let mut shared = STAGING.try_lock();
        let buf = match shared.as_deref_mut() {
            Ok(buf) => buf,
            Err(_) => &mut fresh,
        };
        buf.resize(STAGE + ALIGN, 0);
        let result = write_through(parts, path, buf);
        match result {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)) => None,
            r => Some(r),
        }
    }

    fn write_through(parts: &[Vec<u8>], path: &std::path::Path, buf: &mut [u8]) -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)?;
        let start = buf.as_ptr().align_offset(ALIGN);
        let stage = &mut buf[start..start + STAGE];
        let (mut fill, mut written) = (0usize, 0u64);
        for part in parts {
            let mut rest = &part[..];
            while !rest.is_empty() {
                let n = rest.len().min(STAGE - fill);
                stage[fill..fill + n].copy_from_slice(&rest[..n]);
                (fill, rest) = (fill + n, &rest[n..]);
                if fill == STAGE {
                    file.write_all(stage)?;
                    (written, fill) = (written + STAGE as u64, 0);
                }
            }
        }
        if fill > 0 {
            // The last block is written whole and the file cut back to its length.
            let padded = fill.next_multiple_of(ALIGN);
            stage[fill..padded].fill(0);
            file.write_all(&stage[..padded])?;
            file.set_len(written + fill as u64)?;
        }
        file.sync_all()
    }
}

// Parquet enums (parquet.thrift).
const BOOLEAN: i32 = 0;
const INT32: i32 = 1;
const INT64: i32 = 2;
const FLOAT: i32 = 4;
const BYTE_ARRAY: i32 = 6;
const REQUIRED: i32 = 0;
const OPTIONAL: i32 = 1;
const REPEATED: i32 = 2;
const CONVERTED_UTF8: i32 = 0;
const CONVERTED_LIST: i32 = 3;
// LogicalType union members.
const LOGICAL_STRING: i16 = 1;
const LOGICAL_LIST: i16 = 3;
pub(crate) const ENC_PLAIN: i32 = 0;
pub(crate) const ENC_RLE: i32 = 3;
const CODEC_UNCOMPRESSED: i32 = 0;
const CODEC_ZSTD: i32 = 6;
pub(crate) const PAGE_DATA: i32 = 0;

impl ColumnData<'_> {
    fn len(&self) -> usize {
        match self {
            ColumnData::Int64(v) => v.len(),
            ColumnData::Int32(v) => v.len(),
            ColumnData::Bool(v) => v.len(),
            ColumnData::Utf8(v) => v.len(),
            ColumnData::PaddedF32 { rows, .. } => rows.len(),
            ColumnData::ListI32(v) => v.len(),
        }
    }

    fn physical(&self) -> i32 {
        match self {
            ColumnData::Int64(_) => INT64,
            ColumnData::Int32(_) | ColumnData::ListI32(_) => INT32,
            ColumnData::Bool(_) => BOOLEAN,
            ColumnData::Utf8(_) => BYTE_ARRAY,
            ColumnData::PaddedF32 { .. } => FLOAT,
        }
    }

    fn is_list(&self) -> bool {
        matches!(self, ColumnData::PaddedF32 { .. } | ColumnData::ListI32(_))
    }

    fn check(&self, name: &str) -> Result<(), String> {
        if let ColumnData::PaddedF32 { data, t_max, f_max, rows, cols } = self {
            if data.len() != rows.len() * t_max * f_max {
                return Err(format!(
                    "column {name}: {} values do not fill ({}, {t_max}, {f_max})",
                    data.len(),
                    rows.len()
                ));
            }
            if rows.len() != cols.len() {
                return Err(format!("column {name}: {} row counts but {} column counts", rows.len(), cols.len()));
            }
            for (b, (&r, &c)) in rows.iter().zip(cols).enumerate() {
                if r > *t_max || c > *f_max {
                    return Err(format!(
                        "column {name}: dataset {b} has {r} x {c} cells, more than the padded {t_max} x {f_max}"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Runs of one level value, RLE-encoded (the RLE / bit-packed hybrid with RLE runs only).
/// `shard_read` decodes levels into the same runs and compares them with `list_row`'s.
#[derive(Debug)]
pub(crate) struct Levels {
    /// (value, count), adjacent runs of one value merged.
    pub(crate) runs: Vec<(u32, u32)>,
}

impl Levels {
    pub(crate) fn new() -> Self {
        Levels { runs: Vec::new() }
    }

    pub(crate) fn push(&mut self, value: u32, n: usize) {
        if n == 0 {
            return;
        }
        match self.runs.last_mut() {
            Some((v, len)) if *v == value => *len += n as u32,
            _ => self.runs.push((value, n as u32)),
        }
    }

    /// v1 data pages prefix RLE levels with their byte length (u32 little-endian).
    fn write(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        for &(value, len) in &self.runs {
            varint(out, u64::from(len) << 1);
            out.push(value as u8); // bit widths here are at most 2: one byte per value
        }
        let n = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&n.to_le_bytes());
    }
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn extend_f32(out: &mut Vec<u8>, values: &[f32]) {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: f32 has no padding and any byte is a valid u8; on little-endian targets the
        // in-memory bytes are PLAIN encoding, so the cells are copied with one memcpy.
        let bytes = unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), 4 * values.len()) };
        out.extend_from_slice(bytes);
    }
    #[cfg(not(target_endian = "little"))]
    values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
}

/// The levels of one list row, returning its level entries: a present, empty list (def 1),
/// or `len` present elements (def 3; rep 0, then 1).
pub(crate) fn list_row(len: usize, def: &mut Levels, rep: &mut Levels) -> usize {
    if len == 0 {
        def.push(1, 1);
        rep.push(0, 1);
        1
    } else {
        def.push(3, len);
        rep.push(0, 1);
        rep.push(1, len - 1);
        len
    }
}

/// The levels of rows `r0..r1`: repetition (lists only), definition, and the entry count.
fn levels(data: &ColumnData, r0: usize, r1: usize) -> (Levels, Levels, usize) {
    let (mut def, mut rep) = (Levels::new(), Levels::new());
    let mut entries = 0usize;
    match data {
        ColumnData::Int64(_) | ColumnData::Bool(_) => {
            def.push(1, r1 - r0);
            entries = r1 - r0;
        }
        ColumnData::Int32(v) => {
            entries = r1 - r0;
            v[r0..r1].iter().for_each(|x| def.push(u32::from(x.is_some()), 1));
        }
        ColumnData::Utf8(v) => {
            entries = r1 - r0;
            v[r0..r1].iter().for_each(|x| def.push(u32::from(x.is_some()), 1));
        }
        ColumnData::PaddedF32 { rows, cols, .. } => {
            for b in r0..r1 {
                entries += list_row(rows[b] * cols[b], &mut def, &mut rep);
            }
        }
        ColumnData::ListI32(v) => {
            for row in &v[r0..r1] {
                entries += list_row(row.len(), &mut def, &mut rep);
            }
        }
    }
    (def, rep, entries)
}

/// Bytes of the PLAIN values of rows `r0..r1`.
fn values_len(data: &ColumnData, r0: usize, r1: usize) -> usize {
    match data {
        ColumnData::Int64(_) => 8 * (r1 - r0),
        ColumnData::Int32(v) => 4 * v[r0..r1].iter().filter(|x| x.is_some()).count(),
        ColumnData::Bool(_) => (r1 - r0).div_ceil(8),
        ColumnData::Utf8(v) => v[r0..r1].iter().flatten().map(|s| 4 + s.len()).sum(),
        ColumnData::PaddedF32 { rows, cols, .. } => (r0..r1).map(|b| 4 * rows[b] * cols[b]).sum(),
        ColumnData::ListI32(v) => v[r0..r1].iter().map(|r| 4 * r.len()).sum(),
    }
}

/// Appends the PLAIN values of rows `r0..r1`.
fn write_values(data: &ColumnData, r0: usize, r1: usize, out: &mut Vec<u8>) {
    match data {
        ColumnData::Int64(v) => v[r0..r1].iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        ColumnData::Int32(v) => v[r0..r1].iter().flatten().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        ColumnData::Bool(v) => {
            let start = out.len();
            out.resize(start + (r1 - r0).div_ceil(8), 0);
            for (i, &x) in v[r0..r1].iter().enumerate() {
                out[start + i / 8] |= u8::from(x) << (i % 8);
            }
        }
        ColumnData::Utf8(v) => {
            for s in v[r0..r1].iter().flatten() {
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
        ColumnData::PaddedF32 { data, t_max, f_max, rows, cols } => {
            for b in r0..r1 {
                let (t, k) = (rows[b], cols[b]);
                let base = b * t_max * f_max;
                if k == *f_max {
                    extend_f32(out, &data[base..base + t * k]);
                } else {
                    for r in 0..t {
                        let s = base + r * f_max;
                        extend_f32(out, &data[s..s + k]);
                    }
                }
            }
        }
        ColumnData::ListI32(v) => v[r0..r1].iter().flatten().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
    }
}

/// Writes the uncompressed page body (repetition levels, definition levels, values) of rows
/// `r0..r1` into `body` (cleared first) and returns its number of level entries.
fn page_body(data: &ColumnData, r0: usize, r1: usize, body: &mut Vec<u8>) -> usize {
    let (def, rep, entries) = levels(data, r0, r1);
    body.clear();
    body.reserve(values_len(data, r0, r1) + 16 * (def.runs.len() + rep.runs.len()) + 8);
    if data.is_list() {
        rep.write(body);
    }
    def.write(body);
    write_values(data, r0, r1, body);
    entries
}

thread_local! {
    // A page body buffer per pool thread, reused: a fresh multi-megabyte buffer per page
    // costs as much in page faults as copying the cells into it.
    static BODY: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    // A compression context per pool thread: creating one per page costs more than
    // compressing the small columns.
    static ZSTD: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
}

fn compress(body: &[u8], level: i32) -> Result<Vec<u8>, String> {
    ZSTD.with(|slot| {
        let mut slot = slot.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            let c = zstd::bulk::Compressor::new(level).map_err(|e| format!("zstd level {level}: {e}"))?;
            *slot = Some((level, c));
        }
        let (_, c) = slot.as_mut().expect("set above");
        let mut page = SPARE.take(zstd::zstd_safe::compress_bound(body.len()));
        c.compress_to_buffer(body, &mut page).map_err(|e| format!("zstd: {e}"))?;
        Ok(page)
    })
}

/// Thrift compact protocol, the subset Parquet metadata needs.
struct Thrift {
    buf: Vec<u8>,
    last: Vec<i16>,
}

pub(crate) const T_I16: u8 = 4;
pub(crate) const T_I32: u8 = 5;
pub(crate) const T_I64: u8 = 6;
pub(crate) const T_BINARY: u8 = 8;
pub(crate) const T_LIST: u8 = 9;
pub(crate) const T_STRUCT: u8 = 12;

impl Thrift {
    fn new() -> Self {
        Thrift { buf: Vec::new(), last: vec![0] }
    }

    fn field(&mut self, id: i16, ty: u8) {
        let last = self.last.last_mut().expect("inside a struct");
        let delta = id - *last;
        if (1..=15).contains(&delta) {
            self.buf.push(((delta as u8) << 4) | ty);
        } else {
            self.buf.push(ty);
            varint(&mut self.buf, u64::from((id << 1 ^ id >> 15) as u16));
        }
        *last = id;
    }

    fn zigzag32(&mut self, v: i32) {
        varint(&mut self.buf, u64::from((v << 1 ^ v >> 31) as u32));
    }

    fn i16(&mut self, id: i16, v: i16) {
        self.field(id, T_I16);
        self.zigzag32(i32::from(v));
    }

    fn i32(&mut self, id: i16, v: i32) {
        self.field(id, T_I32);
        self.zigzag32(v);
    }

    fn i64(&mut self, id: i16, v: i64) {
        self.field(id, T_I64);
        varint(&mut self.buf, (v << 1 ^ v >> 63) as u64);
    }

    fn binary(&mut self, id: i16, v: &[u8]) {
        self.field(id, T_BINARY);
        varint(&mut self.buf, v.len() as u64);
        self.buf.extend_from_slice(v);
    }

    fn begin_struct(&mut self, id: i16) {
        self.field(id, T_STRUCT);
        self.last.push(0);
    }

    /// A struct that is a list element (no field header).
    fn begin_element(&mut self) {
        self.last.push(0);
    }

    fn end_struct(&mut self) {
        self.buf.push(0);
        self.last.pop();
    }

    fn list(&mut self, id: i16, elem: u8, n: usize) {
        self.field(id, T_LIST);
        if n < 15 {
            self.buf.push(((n as u8) << 4) | elem);
        } else {
            self.buf.push(0xF0 | elem);
            varint(&mut self.buf, n as u64);
        }
    }

    /// A schema element's converted type (field 6) and logical type (field 10: a union whose
    /// member `logical` is an empty struct, as STRING and LIST are).
    fn annotation(&mut self, converted: i32, logical: i16) {
        self.i32(6, converted);
        self.begin_struct(10);
        self.begin_struct(logical);
        self.end_struct();
        self.end_struct();
    }

    fn list_i32(&mut self, id: i16, values: &[i32]) {
        self.list(id, T_I32, values.len());
        for &v in values {
            self.zigzag32(v);
        }
    }

    fn list_binary(&mut self, id: i16, values: &[&str]) {
        self.list(id, T_BINARY, values.len());
        for v in values {
            varint(&mut self.buf, v.len() as u64);
            self.buf.extend_from_slice(v.as_bytes());
        }
    }
}

/// One column chunk: its page header and its (compressed) page.
struct Chunk {
    header: Vec<u8>,
    page: Vec<u8>,
    uncompressed: usize,
    entries: usize,
}

impl Chunk {
    fn len(&self) -> usize {
        self.header.len() + self.page.len()
    }
}

fn encode_chunk(data: &ColumnData, r0: usize, r1: usize, level: Option<i32>) -> Result<Chunk, String> {
    let (page, body_len, entries) = BODY.with(|body| -> Result<_, String> {
        let mut body = body.borrow_mut();
        let entries = page_body(data, r0, r1, &mut body);
        let page = match level {
            Some(l) => compress(&body, l)?,
            None => {
                let mut page = SPARE.take(body.len());
                page.extend_from_slice(&body);
                page
            }
        };
        Ok((page, body.len(), entries))
    })?;
    let too_big = |n: usize| i32::try_from(n).map_err(|_| format!("a page of {n} bytes exceeds Parquet's 2 GiB limit"));
    let mut h = Thrift::new();
    h.i32(1, PAGE_DATA);
    h.i32(2, too_big(body_len)?);
    h.i32(3, too_big(page.len())?);
    h.i32(4, crc32fast::hash(&page) as i32);
    h.begin_struct(5);
    h.i32(1, too_big(entries)?);
    h.i32(2, ENC_PLAIN);
    h.i32(3, ENC_RLE);
    h.i32(4, ENC_RLE);
    h.end_struct();
    h.buf.push(0);
    Ok(Chunk { uncompressed: h.buf.len() + body_len, header: h.buf, page, entries })
}

fn schema_elements(t: &mut Thrift, columns: &[Column]) {
    t.list(2, T_STRUCT, 1 + columns.iter().map(|c| if c.data.is_list() { 3 } else { 1 }).sum::<usize>());
    t.begin_element();
    t.i32(3, REQUIRED);
    t.binary(4, b"schema");
    t.i32(5, columns.len() as i32);
    t.end_struct();
    for c in columns {
        let leaf = |t: &mut Thrift, name: &str| {
            t.begin_element();
            t.i32(1, c.data.physical());
            t.i32(3, OPTIONAL);
            t.binary(4, name.as_bytes());
            if matches!(c.data, ColumnData::Utf8(_)) {
                t.annotation(CONVERTED_UTF8, LOGICAL_STRING);
            }
            t.end_struct();
        };
        if c.data.is_list() {
            t.begin_element();
            t.i32(3, OPTIONAL);
            t.binary(4, c.name.as_bytes());
            t.i32(5, 1);
            t.annotation(CONVERTED_LIST, LOGICAL_LIST);
            t.end_struct();
            t.begin_element();
            t.i32(3, REPEATED);
            t.binary(4, b"list");
            t.i32(5, 1);
            t.end_struct();
            leaf(t, "element");
        } else {
            leaf(t, c.name);
        }
    }
}

/// Encodes the columns as one Parquet file; pages are compressed on `threads` pool threads.
pub fn encode(columns: &[Column], opts: &WriteOptions, threads: usize) -> Result<Encoded, String> {
    let num_rows = columns.first().map_or(0, |c| c.data.len());
    for c in columns {
        if c.data.len() != num_rows {
            return Err(format!(
                "column {} has {} rows, column {} has {num_rows}",
                c.name,
                c.data.len(),
                columns[0].name
            ));
        }
        c.data.check(c.name)?;
    }
    if opts.row_group == 0 {
        return Err("row_group must be at least 1".into());
    }
    let groups: Vec<(usize, usize)> = (0..num_rows.div_ceil(opts.row_group))
        .map(|g| (g * opts.row_group, ((g + 1) * opts.row_group).min(num_rows)))
        .collect();
    let tasks: Vec<(usize, usize)> = (0..groups.len()).flat_map(|g| (0..columns.len()).map(move |c| (g, c))).collect();
    let chunks: Vec<Chunk> = crate::pool::pool_for(crate::pool::Role::Encode, threads.max(1)).install(|| {
        tasks
            .par_iter()
            .map(|&(g, c)| encode_chunk(&columns[c].data, groups[g].0, groups[g].1, opts.zstd_level))
            .collect::<Result<_, _>>()
    })?;

    let mut parts: Vec<Vec<u8>> = Vec::with_capacity(2 * chunks.len() + 2);
    parts.push(b"PAR1".to_vec());
    let mut offset = 4usize;
    let mut meta = Thrift::new();
    meta.i32(1, 2);
    schema_elements(&mut meta, columns);
    meta.i64(3, num_rows as i64);
    meta.list(4, T_STRUCT, groups.len());
    let codec = if opts.zstd_level.is_some() { CODEC_ZSTD } else { CODEC_UNCOMPRESSED };
    let mut chunks = chunks.into_iter();
    for (g, &(r0, r1)) in groups.iter().enumerate() {
        let group_start = offset as i64;
        let (mut group_uncompressed, mut group_compressed) = (0i64, 0i64);
        meta.begin_element();
        meta.list(1, T_STRUCT, columns.len());
        for c in columns {
            let chunk = chunks.next().expect("one chunk per row group and column");
            let (start, len) = (offset as i64, chunk.len() as i64);
            offset += chunk.len();
            group_uncompressed += chunk.uncompressed as i64;
            group_compressed += len;
            meta.begin_element();
            meta.i64(2, start);
            meta.begin_struct(3);
            meta.i32(1, c.data.physical());
            meta.list_i32(2, &[ENC_PLAIN, ENC_RLE]);
            if c.data.is_list() {
                meta.list_binary(3, &[c.name, "list", "element"]);
            } else {
                meta.list_binary(3, &[c.name]);
            }
            meta.i32(4, codec);
            meta.i64(5, chunk.entries as i64);
            meta.i64(6, chunk.uncompressed as i64);
            meta.i64(7, len);
            meta.i64(9, start);
            meta.end_struct();
            meta.end_struct();
            parts.push(chunk.header);
            parts.push(chunk.page);
        }
        meta.i64(2, group_uncompressed);
        meta.i64(3, (r1 - r0) as i64);
        meta.i64(5, group_start);
        meta.i64(6, group_compressed);
        meta.i16(7, g as i16);
        meta.end_struct();
    }
    if !opts.key_value.is_empty() {
        meta.list(5, T_STRUCT, opts.key_value.len());
        for (k, v) in &opts.key_value {
            meta.begin_element();
            meta.binary(1, k.as_bytes());
            meta.binary(2, v.as_bytes());
            meta.end_struct();
        }
    }
    meta.binary(6, opts.created_by.as_bytes());
    meta.buf.push(0);
    let footer_len = meta.buf.len() as u32;
    let mut footer = meta.buf;
    footer.extend_from_slice(&footer_len.to_le_bytes());
    footer.extend_from_slice(b"PAR1");
    parts.push(footer);
    let mut h = Xxh3::new();
    parts.iter().for_each(|p| h.update(p));
    Ok(Encoded { parts, digest: hex128(h.digest128()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_rle_runs_with_a_length_prefix() {
        let mut l = Levels::new();
        l.push(3, 5);
        l.push(3, 2);
        l.push(1, 1);
        let mut out = Vec::new();
        l.write(&mut out);
        // two runs: (7 << 1) = 14, value 3; (1 << 1) = 2, value 1
        assert_eq!(out, vec![4, 0, 0, 0, 14, 3, 2, 1]);
    }

    #[test]
    fn list_rows_take_only_the_active_cells() {
        // 2 datasets in a (2, 2, 3) padded array: 2 x 2 and 1 x 3 cells.
        let data: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let col = ColumnData::PaddedF32 { data: &data, t_max: 2, f_max: 3, rows: vec![2, 1], cols: vec![2, 3] };
        let mut body = Vec::new();
        let entries = page_body(&col, 0, 2, &mut body);
        assert_eq!(entries, 7);
        let values: Vec<f32> =
            body[body.len() - 28..].chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        assert_eq!(values, vec![0., 1., 3., 4., 6., 7., 8.]);
    }

    #[test]
    fn spare_page_buffers_are_reused_smallest_fit_first_within_the_byte_cap() {
        let spare = Spare::new(3 << 20);
        let mut big = Vec::with_capacity(2 << 20);
        big.push(1u8);
        let small = Vec::<u8>::with_capacity(1 << 20);
        let tiny = Vec::<u8>::with_capacity(100);
        let (big_at, small_at) = (big.as_ptr(), small.as_ptr());
        spare.put(vec![big, small, tiny, Vec::with_capacity(1 << 20)]); // the last one is over the cap
        assert_eq!(spare.lock().len(), 2, "tiny buffers and buffers beyond the cap are dropped");
        let a = spare.take(900 << 10);
        assert_eq!(a.as_ptr(), small_at, "the smallest buffer that fits");
        let b = spare.take(1 << 20);
        assert_eq!((b.as_ptr(), b.len()), (big_at, 0), "recycled buffers come back empty");
        assert!(spare.take(1 << 20).capacity() >= 1 << 20 && spare.lock().is_empty());
    }

    #[test]
    fn thrift_long_field_deltas_use_the_explicit_form() {
        let mut t = Thrift::new();
        t.i32(1, -1);
        t.i32(20, 1);
        // delta 1, type i32, zigzag(-1) = 1; then type byte, zigzag(20) = 40, zigzag(1) = 2
        assert_eq!(t.buf, vec![0x15, 1, 0x05, 40, 2]);
    }

    #[test]
    fn bad_shapes_are_errors_not_panics() {
        let data = vec![0f32; 6];
        let cols = [Column {
            name: "x",
            data: ColumnData::PaddedF32 { data: &data, t_max: 2, f_max: 3, rows: vec![3], cols: vec![2] },
        }];
        let opts = WriteOptions { row_group: 8, zstd_level: Some(1), key_value: vec![], created_by: "t".into() };
        let err = encode(&cols, &opts, 1).err().unwrap();
        assert!(err.contains("more than the padded"), "{err}");
    }

    #[test]
    fn written_files_hold_the_encoded_bytes_and_their_digest() {
        let dir = std::env::temp_dir().join(format!("tabfm-parquet-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for cells in [3usize, 700_001] {
            let data: Vec<f32> = (0..cells).map(|i| (i as f32 * 0.37).sin()).collect();
            let cols = [Column {
                name: "x",
                data: ColumnData::PaddedF32 { data: &data, t_max: cells, f_max: 1, rows: vec![cells], cols: vec![1] },
            }];
            let opts = WriteOptions { row_group: 8, zstd_level: Some(-1), key_value: vec![], created_by: "t".into() };
            let enc = encode(&cols, &opts, 2).unwrap();
            let path = dir.join(format!("{cells}.parquet"));
            std::fs::write(&path, vec![7u8; 3 * enc.len()]).unwrap(); // a longer file is replaced
            enc.write_file(&path).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), enc.to_vec(), "{cells} cells");
            // The digest taken in memory is the file's (read back in 1 MiB blocks).
            assert_eq!(file_digest(&path).unwrap(), enc.digest);
        }
        // XXH3-128 reference vector (canonical form) of the empty input.
        let empty = dir.join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(file_digest(&empty).unwrap(), "99aa06d3014798d86001c324468d497f");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_on_every_filesystem_hold_the_encoded_bytes() {
        // Disks and (since Linux 6.6) tmpfs take direct I/O; both paths are checked on both.
        // Sizes straddle the 4 KiB blocks and the 4 MiB stage.
        let dirs = [std::env::temp_dir(), std::path::PathBuf::from("/dev/shm")];
        for root in dirs.iter().filter(|d| d.is_dir()) {
            let dir = root.join(format!("tabfm-parquet-fs-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            for cells in [1usize, 1023, 1024, 1_048_576, 1_500_000] {
                let data: Vec<f32> = (0..cells).map(|i| (i as f32 * 0.11).cos()).collect();
                let cols = [Column {
                    name: "x",
                    data: ColumnData::PaddedF32 {
                        data: &data,
                        t_max: cells,
                        f_max: 1,
                        rows: vec![cells],
                        cols: vec![1],
                    },
                }];
                let opts = WriteOptions { row_group: 1, zstd_level: None, key_value: vec![], created_by: "t".into() };
                let enc = encode(&cols, &opts, 1).unwrap();
                let path = dir.join(format!("{cells}.parquet"));
                for buffered in [false, true] {
                    std::fs::write(&path, vec![7u8; enc.len() + 9000]).unwrap(); // a longer file is replaced
                    if buffered { enc.write_buffered(&path) } else { enc.write_file(&path) }.unwrap();
                    let what = format!("{} {cells} cells, buffered {buffered}", root.display());
                    assert_eq!(std::fs::read(&path).unwrap(), enc.to_vec(), "{what}");
                }
            }
            // Files of exact block and stage multiples, and empty ones, gathered from uneven parts.
            #[cfg(target_os = "linux")]
            let stage = direct::STAGE;
            #[cfg(not(target_os = "linux"))]
            let stage = 4 << 20;
            for len in [0usize, 4096, stage, 2 * stage, stage + 1] {
                let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4099) as u8).collect();
                let parts: Vec<Vec<u8>> = bytes.chunks(1_000_003).map(<[u8]>::to_vec).collect();
                let enc = Encoded { parts, digest: String::new() };
                let path = dir.join(format!("raw-{len}"));
                std::fs::write(&path, vec![7u8; len + 9000]).unwrap();
                enc.write_file(&path).unwrap();
                assert_eq!(std::fs::read(&path).unwrap(), bytes, "{} {len} bytes", root.display());
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
