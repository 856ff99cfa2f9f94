//! `tabfm._core`: thin PyO3 bindings over `tabfm-core`.
//!
//! Each call converts arguments, releases the GIL (`Python::detach`) for the work, and
//! hands the Rust-allocated buffers to numpy without copying (`into_pyarray`).

use std::sync::Arc;

use numpy::ndarray::{Array1, Array2, Array3};
use numpy::{IntoPyArray, PyArray1, PyArray2, PyArray3, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use tabfm_core::batch::{DatasetMeta, generate_batch};
use tabfm_core::config::PriorConfig;
use tabfm_core::pool;
use tabfm_core::rng::{Key, domain};

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
    let xs = x.as_slice().map_err(|_| PyValueError::new_err("x must be C-contiguous"))?;
    let ys = y.as_slice().map_err(|_| PyValueError::new_err("y must be C-contiguous"))?;
    let params = tabfm_core::tree::BoosterParams::new(max_depth, n_estimators);
    let out = py.detach(|| tabfm_core::tree::fit_predict(xs, n, p, ys, o, &params));
    let arr = Array2::from_shape_vec((n, o), out).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(arr.into_pyarray(py))
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
    m.add_function(wrap_pyfunction!(available_threads, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
