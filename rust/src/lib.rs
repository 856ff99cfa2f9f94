//! `tabfm._core`: thin PyO3 bindings over `tabfm-core`.
//!
//! Each call converts arguments, releases the GIL (`Python::detach`) for the work, and
//! hands the Rust-allocated buffers to numpy without copying (`into_pyarray`).

use std::sync::Arc;

use numpy::ndarray::{Array1, Array2, Array3};
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArray3, PyReadonlyArray1, PyReadonlyArray2, PyReadonlyArray3, PyReadwriteArray3,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use tabfm_core::batch::{DatasetMeta, generate_batch};
use tabfm_core::config::PriorConfig;
use tabfm_core::graph::Lineage;
use tabfm_core::pool;
use tabfm_core::rng::{Key, domain};

// Batch buffers are fresh every call (numpy owns them once returned): mapped directly on
// huge-page-advised mappings, they fault in 2 MiB at a time (see `tabfm_core::alloc`).
#[global_allocator]
static ALLOC: tabfm_core::alloc::HugeAlloc = tabfm_core::alloc::HugeAlloc;

/// A validated prior configuration that generates batches by index.
#[pyclass(frozen, module = "tabfm._core")]
struct PriorEngine {
    cfg: Arc<PriorConfig>,
    json: String,
}

type BatchArrays<'py> = (
    Bound<'py, PyArray3<f32>>,
    Bound<'py, PyArray2<f32>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<i64>>,
    Option<Bound<'py, PyList>>,
);

fn meta_dict<'py>(py: Python<'py>, m: &DatasetMeta) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("prior_type", m.prior)?;
    d.set_item("group", m.group)?;
    d.set_item("num_features", m.num_features)?;
    d.set_item("d", m.d)?;
    d.set_item("num_classes", m.num_classes)?;
    d.set_item("realised_classes", m.realised_classes)?;
    d.set_item("categorical_columns", m.categorical.clone())?;
    d.set_item("attempts", m.attempts)?;
    d.set_item("valid", m.valid)?;
    let hp = PyDict::new(py);
    for (k, v) in &m.hp {
        hp.set_item(k, v)?;
    }
    d.set_item("hp", hp)?;
    d.set_item("layers", m.layers.clone())?;
    if m.prior == "graph_scm" {
        let rej = PyDict::new(py);
        for (reason, count) in &m.rejections {
            rej.set_item(reason, count)?;
        }
        d.set_item("rejections", rej)?;
        if let Some(l) = &m.lineage {
            d.set_item("lineage", lineage_dict(py, l)?)?;
        }
    }
    Ok(d)
}

fn lineage_dict<'py>(py: Python<'py>, l: &Lineage) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("n_nodes", l.n_nodes)?;
    d.set_item("parents", l.parents.clone())?;
    d.set_item("n_edges", l.parents.iter().map(Vec::len).sum::<usize>())?;
    d.set_item("target_node", l.target_node)?;
    d.set_item("feature_nodes", l.feature_nodes.clone())?;
    d.set_item("relevant_features", l.relevant_features.clone())?;
    let nodes = PyList::empty(py);
    for n in &l.nodes {
        let nd = PyDict::new(py);
        nd.set_item("node", n.node)?;
        nd.set_item("composition", &n.composition)?;
        nd.set_item("families", n.families.clone())?;
        nodes.append(nd)?;
    }
    d.set_item("nodes", nodes)?;
    d.set_item("noise_family", l.noise_family)?;
    let miss = PyDict::new(py);
    miss.set_item("mechanism", l.missing_mechanism)?;
    miss.set_item("requested_rate", l.missing_rate_requested)?;
    miss.set_item("realised_rate", l.missing_rate_realised)?;
    miss.set_item("always_observed", l.missing_always_observed.clone())?;
    d.set_item("missingness", miss)?;
    let shift = PyDict::new(py);
    shift.set_item("mode", &l.shift_mode)?;
    shift.set_item("graph_scale", l.graph_scale)?;
    shift.set_item("mechanism_scale", l.mechanism_scale)?;
    shift.set_item("variance_scale", l.variance_scale)?;
    shift.set_item("edge_odds_multiplier", l.edge_odds_multiplier)?;
    shift.set_item("noise_variance_multiplier", l.noise_variance_multiplier)?;
    shift.set_item("mechanism_nonlinear_mass", l.mechanism_nonlinear_mass)?;
    d.set_item("shift", shift)?;
    match l.learnability {
        Some((p, score)) => {
            let ld = PyDict::new(py);
            ld.set_item("pvalue", p)?;
            ld.set_item("score", score)?;
            d.set_item("learnability", ld)?;
        }
        None => d.set_item("learnability", py.None())?,
    }
    Ok(d)
}

#[pymethods]
impl PriorEngine {
    /// Parses and validates a JSON configuration (raises ValueError naming the field).
    #[new]
    fn new(config_json: &str) -> PyResult<Self> {
        let cfg = PriorConfig::from_json(config_json).map_err(|e| PyValueError::new_err(e.0))?;
        Ok(PriorEngine { cfg: Arc::new(cfg), json: config_json.to_string() })
    }

    /// Generates batch `index` on `n_jobs` threads (-1: all cores), GIL released.
    #[pyo3(signature = (index, n_jobs=1, with_meta=false))]
    fn generate<'py>(&self, py: Python<'py>, index: u64, n_jobs: i64, with_meta: bool) -> PyResult<BatchArrays<'py>> {
        let cfg = Arc::clone(&self.cfg);
        let threads = pool::resolve_threads(n_jobs);
        let batch = py.detach(move || generate_batch(&cfg, index, threads));
        let shape_err = |e: numpy::ndarray::ShapeError| PyValueError::new_err(e.to_string());
        let x = Array3::from_shape_vec((batch.b, batch.t, batch.f), batch.x).map_err(shape_err)?;
        let y = Array2::from_shape_vec((batch.b, batch.t), batch.y).map_err(shape_err)?;
        let meta = if with_meta {
            let items = batch.meta.iter().map(|m| meta_dict(py, m)).collect::<PyResult<Vec<_>>>()?;
            Some(PyList::new(py, items)?)
        } else {
            None
        };
        Ok((
            x.into_pyarray(py),
            y.into_pyarray(py),
            Array1::from(batch.d).into_pyarray(py),
            Array1::from(batch.seq_lens).into_pyarray(py),
            Array1::from(batch.train_sizes).into_pyarray(py),
            meta,
        ))
    }

    #[getter]
    fn config_json(&self) -> &str {
        &self.json
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let cls = py.get_type::<PriorEngine>().into_any();
        let args = PyTuple::new(py, [slf.get().json.clone()])?;
        Ok((cls, args))
    }
}

/// The Philox4x64-10 block function (exposed for test vectors).
#[pyfunction]
fn philox4x64_10(ctr: [u64; 4], key: [u64; 2]) -> [u64; 4] {
    tabfm_core::rng::philox4x64_10(ctr, key)
}

/// Draws from a keyed test stream: `kind` is "u64", "uniform" or "normal".
#[pyfunction]
fn random_stream<'py>(py: Python<'py>, seed: u64, stream: u64, n: usize, kind: &str) -> PyResult<Bound<'py, PyAny>> {
    let mut rng = Key::new(seed, [domain::TEST, stream, 0, 0]).rng();
    Ok(match kind {
        "u64" => (0..n).map(|_| rng.next_u64()).collect::<Vec<u64>>().into_pyarray(py).into_any(),
        "uniform" => py.detach(|| (0..n).map(|_| rng.uniform()).collect::<Vec<f64>>()).into_pyarray(py).into_any(),
        "normal" => py.detach(|| (0..n).map(|_| rng.normal()).collect::<Vec<f64>>()).into_pyarray(py).into_any(),
        other => {
            return Err(PyValueError::new_err(format!(
                "kind={other:?} is invalid: expected 'u64', 'uniform' or 'normal'"
            )));
        }
    })
}

/// Fits the tree SCM's boosted multi-output trees and returns in-sample predictions.
#[pyfunction]
fn _tree_fit_predict<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    y: PyReadonlyArray2<'py, f32>,
    max_depth: usize,
    n_estimators: usize,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let (n, p) = (x.shape()[0], x.shape()[1]);
    let (ny, o) = (y.shape()[0], y.shape()[1]);
    if ny != n {
        return Err(PyValueError::new_err(format!("y has {ny} rows but x has {n}: they must match")));
    }
    let (xs, ys) = (c_slice(&x, "x")?, c_slice(&y, "y")?);
    let params = tabfm_core::tree::BoosterParams::new(max_depth, n_estimators);
    let out = py.detach(|| tabfm_core::tree::fit_predict(xs, n, p, ys, o, &params));
    let arr = Array2::from_shape_vec((n, o), out).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(arr.into_pyarray(py))
}

/// Learnability of (X, y): out-of-bag ExtraTrees against a constant baseline, with a
/// bootstrap p-value of "model better than baseline" (the graph prior's filter).
#[pyfunction]
#[pyo3(signature = (x, y, classification, seed=0, n_estimators=25, max_depth=6, n_bootstrap=200))]
#[allow(clippy::too_many_arguments)] // the Python signature: keyword arguments with defaults
fn learnability<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    y: numpy::PyReadonlyArray1<'py, f32>,
    classification: bool,
    seed: u64,
    n_estimators: usize,
    max_depth: usize,
    n_bootstrap: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let (n, p) = (x.shape()[0], x.shape()[1]);
    if y.len() != n {
        return Err(PyValueError::new_err(format!("y has {} rows but x has {n}: they must match", y.len())));
    }
    for (name, v) in [("n_estimators", n_estimators), ("max_depth", max_depth), ("n_bootstrap", n_bootstrap)] {
        if v == 0 {
            return Err(PyValueError::new_err(format!("{name}=0 is invalid: must be >= 1")));
        }
    }
    let (xs, ys) = (c_slice(&x, "x")?, c_slice(&y, "y")?);
    if classification && ys.iter().any(|v| !(v.is_finite() && *v >= 0.0 && v.fract() == 0.0)) {
        return Err(PyValueError::new_err("y is invalid for classification: labels must be non-negative integers"));
    }
    let params = tabfm_core::learn::ExtraTreesParams { n_estimators, max_depth, ..Default::default() };
    let l = py.detach(|| {
        let mut rng = Key::new(seed, [domain::TEST, 0x6c65_6172_6e00, 0, 0]).rng();
        let classes = classification.then(|| ys.iter().fold(0.0f32, |a, &b| a.max(b)) as usize + 1);
        tabfm_core::learn::learnability(&mut rng, xs, n, p, ys, classes, &params, n_bootstrap)
    });
    let d = PyDict::new(py);
    d.set_item("pvalue", l.pvalue)?;
    d.set_item("score", l.score())?;
    d.set_item("model_rmse", l.model_rmse)?;
    d.set_item("baseline_rmse", l.baseline_rmse)?;
    d.set_item("n_oob", l.n_oob)?;
    Ok(d)
}

/// Panics on purpose (on this thread or inside the worker pool): proves that a Rust
/// panic surfaces as a Python exception instead of killing the interpreter.
#[pyfunction]
fn _debug_panic(py: Python<'_>, in_pool: bool) {
    py.detach(|| {
        if in_pool {
            pool::pool(2).install(|| {
                rayon::join(|| (), || panic!("tabfm debug panic inside the worker pool"));
            });
        } else {
            panic!("tabfm debug panic");
        }
    });
}

/// Writes one generated batch as a corpus shard (the schema of `tabfm.corpus`) to `path`,
/// synced to the device; returns (bytes, XXH3-128 hex digest). Pages are compressed on `n_jobs`
/// threads of the encoding pool, GIL released.
// One argument per shard column: the Python caller passes the arrays of a generated batch.
#[allow(clippy::too_many_arguments)]
#[pyfunction]
#[pyo3(signature = (path, x, y, d, seq_lens, train_sizes, batch_index, batch_size, num_classes, categorical,
                    valid, meta, lineage, arrow_schema, row_group, zstd_level, n_jobs))]
fn write_corpus_shard(
    py: Python<'_>,
    path: std::path::PathBuf,
    x: PyReadonlyArray3<'_, f32>,
    y: PyReadonlyArray2<'_, f32>,
    d: PyReadonlyArray1<'_, i64>,
    seq_lens: PyReadonlyArray1<'_, i64>,
    train_sizes: PyReadonlyArray1<'_, i64>,
    batch_index: i64,
    batch_size: i64,
    num_classes: Vec<Option<i32>>,
    categorical: Vec<Vec<i32>>,
    valid: Vec<bool>,
    meta: Vec<String>,
    lineage: Vec<Option<String>>,
    arrow_schema: String,
    row_group: usize,
    zstd_level: Option<i32>,
    n_jobs: i64,
) -> PyResult<(u64, String)> {
    use tabfm_core::parquet::{Column, ColumnData, WriteOptions, encode};
    let [b, t, f] = <[usize; 3]>::try_from(x.shape()).map_err(|_| PyValueError::new_err("x must be 3-D"))?;
    if y.shape() != [b, t] {
        return Err(PyValueError::new_err(format!("y has shape {:?}, x is ({b}, {t}, {f})", y.shape())));
    }
    let (xs, ys) = (c_slice(&x, "x")?, c_slice(&y, "y")?);
    let vec_of = |a: &PyReadonlyArray1<'_, i64>, name: &str| -> PyResult<Vec<i64>> {
        let v = c_slice(a, name)?.to_vec();
        if v.len() != b || v.iter().any(|&n| n < 0) {
            return Err(PyValueError::new_err(format!("{name} must hold {b} non-negative counts")));
        }
        Ok(v)
    };
    let (d, seq_lens, train_sizes) =
        (vec_of(&d, "d")?, vec_of(&seq_lens, "seq_lens")?, vec_of(&train_sizes, "train_sizes")?);
    for (name, n) in [
        ("num_classes", num_classes.len()),
        ("categorical", categorical.len()),
        ("valid", valid.len()),
        ("meta", meta.len()),
        ("lineage", lineage.len()),
    ] {
        if n != b {
            return Err(PyValueError::new_err(format!("{name} has {n} entries for a batch of {b}")));
        }
    }
    let int32 = |v: &[i64]| v.iter().map(|&n| i32::try_from(n).ok()).collect::<Vec<_>>();
    let rows: Vec<usize> = seq_lens.iter().map(|&n| n as usize).collect();
    let result = py.detach(|| -> Result<(u64, String), (bool, String)> {
        let columns = [
            Column {
                name: "dataset_index",
                data: ColumnData::Int64((0..b as i64).map(|i| batch_index * batch_size + i).collect()),
            },
            Column { name: "batch_index", data: ColumnData::Int64(vec![batch_index; b]) },
            Column { name: "position", data: ColumnData::Int32((0..b as i32).map(Some).collect()) },
            Column { name: "seq_len", data: ColumnData::Int32(int32(&seq_lens)) },
            Column { name: "train_size", data: ColumnData::Int32(int32(&train_sizes)) },
            Column { name: "d", data: ColumnData::Int32(int32(&d)) },
            Column { name: "num_classes", data: ColumnData::Int32(num_classes) },
            Column {
                name: "x",
                data: ColumnData::PaddedF32 {
                    data: xs,
                    t_max: t,
                    f_max: f,
                    rows: rows.clone(),
                    cols: d.iter().map(|&n| n as usize).collect(),
                },
            },
            Column { name: "y", data: ColumnData::PaddedF32 { data: ys, t_max: t, f_max: 1, rows, cols: vec![1; b] } },
            Column { name: "categorical", data: ColumnData::ListI32(categorical) },
            Column { name: "valid", data: ColumnData::Bool(valid) },
            Column { name: "meta", data: ColumnData::Utf8(meta.iter().map(|s| Some(s.as_str())).collect()) },
            Column { name: "lineage", data: ColumnData::Utf8(lineage.iter().map(|s| s.as_deref()).collect()) },
        ];
        let opts = WriteOptions {
            row_group,
            zstd_level,
            key_value: vec![("ARROW:schema".into(), arrow_schema)],
            created_by: concat!("tabfm version ", env!("CARGO_PKG_VERSION")).into(),
        };
        let encoded = encode(&columns, &opts, pool::resolve_threads(n_jobs)).map_err(|e| (false, e))?;
        let io = |e: std::io::Error| (true, format!("{}: {e}", path.display()));
        encoded.write_file(&path).map_err(io)?;
        Ok((encoded.len() as u64, encoded.digest.clone()))
    });
    result.map_err(|(is_io, e)| if is_io { PyOSError::new_err(e) } else { PyValueError::new_err(e) })
}

/// A C-ordered array's values as a slice. numpy's `as_slice` also accepts Fortran order,
/// whose values the core would read (or write) in the wrong order.
fn c_slice<'a, T: numpy::Element, D: numpy::ndarray::Dimension>(
    a: &'a numpy::PyReadonlyArray<'_, T, D>,
    name: &str,
) -> PyResult<&'a [T]> {
    let values = a.as_slice().ok().filter(|_| a.is_c_contiguous());
    values.ok_or_else(|| PyValueError::new_err(format!("{name} must be a C-contiguous array")))
}

/// [`c_slice`] for an array the core writes into.
fn c_slice_mut<'a, T: numpy::Element, D: numpy::ndarray::Dimension>(
    a: &'a mut numpy::PyReadwriteArray<'_, T, D>,
    name: &str,
) -> PyResult<&'a mut [T]> {
    let c_order = a.is_c_contiguous();
    let values = a.as_slice_mut().ok().filter(|_| c_order);
    values.ok_or_else(|| PyValueError::new_err(format!("{name} must be a C-contiguous array")))
}

/// Decodes lists `skip .. skip + count` of one float list column of a tabfm shard (chunks:
/// `(offset, length, zstd)` of consecutive row groups from `first_group`) into slots `slot ..` of `out`
/// `(slots, t, f)`, GIL released. A damaged or foreign chunk raises `ValueError` naming the
/// row group and what failed.
#[allow(clippy::too_many_arguments)]
#[pyfunction]
#[pyo3(signature = (path, chunks, lists_per_chunk, rows, cols, skip, count, slot, out, first_group=0))]
fn read_shard_lists(
    py: Python<'_>,
    path: std::path::PathBuf,
    chunks: Vec<(u64, u64, bool)>,
    lists_per_chunk: Vec<usize>,
    rows: Vec<usize>,
    cols: Vec<usize>,
    skip: usize,
    count: usize,
    slot: usize,
    mut out: PyReadwriteArray3<'_, f32>,
    first_group: usize,
) -> PyResult<()> {
    use tabfm_core::shard_read::{ChunkRange, Target, read_lists};
    let [_, t_max, f_max] =
        <[usize; 3]>::try_from(out.shape()).map_err(|_| PyValueError::new_err("out must be 3-D"))?;
    let out = c_slice_mut(&mut out, "out")?;
    let chunks: Vec<ChunkRange> =
        chunks.into_iter().map(|(offset, len, zstd)| ChunkRange { offset, len, zstd }).collect();
    py.detach(|| {
        let file = std::fs::File::open(&path).map_err(|e| format!("cannot open: {e}"))?;
        let mut target = Target { out, t_max, f_max };
        read_lists(&file, &chunks, &lists_per_chunk, &rows, &cols, skip, count, slot, first_group, &mut target)
    })
    .map_err(PyValueError::new_err)
}

/// XXH3-128 hex digest of a file (the shard checksum of corpus records), GIL released.
#[pyfunction]
fn file_digest(py: Python<'_>, path: std::path::PathBuf) -> PyResult<String> {
    py.detach(|| tabfm_core::parquet::file_digest(&path))
        .map_err(|e| PyOSError::new_err(format!("{}: {e}", path.display())))
}

/// Number of threads `n_jobs=-1` uses.
#[pyfunction]
fn available_threads() -> usize {
    pool::available_threads()
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PriorEngine>()?;
    m.add_function(wrap_pyfunction!(philox4x64_10, m)?)?;
    m.add_function(wrap_pyfunction!(random_stream, m)?)?;
    m.add_function(wrap_pyfunction!(_tree_fit_predict, m)?)?;
    m.add_function(wrap_pyfunction!(_debug_panic, m)?)?;
    m.add_function(wrap_pyfunction!(learnability, m)?)?;
    m.add_function(wrap_pyfunction!(available_threads, m)?)?;
    m.add_function(wrap_pyfunction!(write_corpus_shard, m)?)?;
    m.add_function(wrap_pyfunction!(file_digest, m)?)?;
    m.add_function(wrap_pyfunction!(read_shard_lists, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
