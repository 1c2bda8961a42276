/*
 * ferry._fast: the per-batch work of TokenLoader's default (lent) mode in C. The pure-Python
 * twin (__init__.py's _next_lent) spends about 2 us a batch in ctypes, a ctypes array, numpy's
 * constructor, two indexings and a Python __del__, on the cores the reader threads need; here
 * one call does it: the C loader's ferry_py_next_lent with the GIL released (it blocks waiting
 * for the readers), then the two arrays over the lent buffer, sharing one base object whose
 * dealloc gives the buffer back to the loader's pool.
 *
 * The extension does not link libferry_loader: it calls ferry_py_next_lent at the address the
 * package's ctypes library has (the handle belongs to that copy of the library; a second copy
 * loaded here would be another loader). The pool stays Python's (_Pool.put, its one source of
 * rules: spare, or freed once full or closed); the base calls it as _Lent.__del__ does.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>
#include <stdint.h>

typedef int (*next_lent_fn)(void *h, void *spare, void **buf, uint64_t *epoch, uint64_t *position);

/* A lent buffer, 2 x B x T int32: the base of its inputs and targets arrays. */
/* clang-format cannot parse CPython's header macros: off around them */
/* clang-format off */
struct lent {
	PyObject_HEAD
	void *addr;
	PyObject *put; /* the pool's put(addr) */
};
/* clang-format on */

static void lent_dealloc(PyObject *self)
{
	struct lent *l = (struct lent *)self;
	PyObject *type, *value, *tb, *addr, *r = NULL;

	/* Any thread, any time the last array dies: an exception being raised stays as it was. */
	PyErr_Fetch(&type, &value, &tb);
	addr = PyLong_FromVoidPtr(l->addr);
	if (addr)
		r = PyObject_CallOneArg(l->put, addr);
	if (!r)
		PyErr_WriteUnraisable(l->put);
	Py_XDECREF(r);
	Py_XDECREF(addr);
	Py_DECREF(l->put);
	PyErr_Restore(type, value, tb);
	Py_TYPE(self)->tp_free(self);
}

/* No tp_new: made only by lender.next; copy.copy of one raises instead of sharing the buffer. */
/* clang-format off */
static PyTypeObject lent_type = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "ferry._fast.Lent",
	.tp_basicsize = sizeof(struct lent),
	.tp_dealloc = lent_dealloc,
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "A batch buffer lent by the C loader; back to its pool when this dies.",
};
/* clang-format on */

/* One TokenLoader's: the C function, its handle, the batch's shape, the pool's put. */
/* clang-format off */
struct lender {
	PyObject_HEAD
	next_lent_fn fn;
	void *h;
	npy_intp dims[2];
	size_t half; /* bytes of inputs (targets follow) */
	PyObject *put;
};
/* clang-format on */

static void lender_dealloc(PyObject *self)
{
	Py_DECREF(((struct lender *)self)->put);
	Py_TYPE(self)->tp_free(self);
}

static PyObject *array_over(struct lender *ld, char *mem, struct lent *base)
{
	PyObject *a = PyArray_New(&PyArray_Type, 2, ld->dims, NPY_INT32, NULL, mem, 0,
		NPY_ARRAY_CARRAY, NULL);

	if (!a)
		return NULL;
	Py_INCREF(base);
	/* Steals base, on failure too. */
	if (PyArray_SetBaseObject((PyArrayObject *)a, (PyObject *)base) < 0) {
		Py_DECREF(a);
		return NULL;
	}
	return a;
}

/*
 * next(spare) -> (inputs, targets, epoch, position), or the C loader's -errno as an int (the
 * caller puts spare back and raises with ferry_py_error's reason, as the pure path does). The
 * caller holds the loader's lock and its handle alive across the call.
 */
static PyObject *lender_next(PyObject *self, PyObject *arg)
{
	struct lender *ld = (struct lender *)self;
	void *spare = PyLong_AsVoidPtr(arg), *buf = NULL;
	uint64_t epoch = 0, position = 0;
	PyObject *in, *tg;
	struct lent *base;
	PyThreadState *ts;
	int rc;

	if (!spare) {
		if (!PyErr_Occurred())
			PyErr_SetString(PyExc_ValueError, "spare: a NULL buffer");
		return NULL;
	}
	/* The GIL released: the C loader may wait for its readers. */
	ts = PyEval_SaveThread();
	rc = ld->fn(ld->h, spare, &buf, &epoch, &position);
	PyEval_RestoreThread(ts);
	if (rc < 0)
		return PyLong_FromLong(rc);
	/* From here buf is the base's: whatever fails below gives it back through its dealloc. */
	base = PyObject_New(struct lent, &lent_type);
	if (!base) {
		PyObject *type, *value, *tb, *addr, *r = NULL;

		/* Back to the pool, the MemoryError kept (a failed put leaks it, never frees twice). */
		PyErr_Fetch(&type, &value, &tb);
		addr = PyLong_FromVoidPtr(buf);
		if (addr)
			r = PyObject_CallOneArg(ld->put, addr);
		if (!r)
			PyErr_WriteUnraisable(ld->put);
		Py_XDECREF(r);
		Py_XDECREF(addr);
		PyErr_Restore(type, value, tb);
		return NULL;
	}
	base->addr = buf;
	Py_INCREF(ld->put);
	base->put = ld->put;
	in = array_over(ld, buf, base);
	tg = in ? array_over(ld, (char *)buf + ld->half, base) : NULL;
	Py_DECREF(base); /* the arrays hold it now, or it is gone and buf with it */
	if (!tg) {
		Py_XDECREF(in);
		return NULL;
	}
	return Py_BuildValue("(NNKK)", in, tg, (unsigned long long)epoch,
		(unsigned long long)position);
}

static PyMethodDef lender_methods[] = {
	{ "next", lender_next, METH_O,
		"next(spare) -> (inputs, targets, epoch, position), or -errno on failure" },
	{ NULL, NULL, 0, NULL },
};

/* clang-format off */
static PyTypeObject lender_type = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "ferry._fast.Lender",
	.tp_basicsize = sizeof(struct lender),
	.tp_dealloc = lender_dealloc,
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_methods = lender_methods,
	.tp_doc = "One TokenLoader's lent batches: lender(fn, handle, batch, seq_len, put).",
};
/* clang-format on */

/* lender(fn, handle, batch, seq_len, put): fn and handle are addresses (ctypes'). */
static PyObject *make_lender(PyObject *mod, PyObject *args)
{
	unsigned long long fn, h;
	Py_ssize_t batch, seq_len;
	PyObject *put;
	struct lender *ld;

	(void)mod;
	if (!PyArg_ParseTuple(args, "KKnnO:lender", &fn, &h, &batch, &seq_len, &put))
		return NULL;
	if (!fn || !h || batch <= 0 || seq_len <= 0 || !PyCallable_Check(put)) {
		PyErr_SetString(PyExc_ValueError,
			"lender: want a function, a handle, batch, seq_len > 0, a callable put");
		return NULL;
	}
	ld = PyObject_New(struct lender, &lender_type);
	if (!ld)
		return NULL;
	ld->fn = (next_lent_fn)(uintptr_t)fn;
	ld->h = (void *)(uintptr_t)h;
	ld->dims[0] = batch;
	ld->dims[1] = seq_len;
	ld->half = (size_t)batch * (size_t)seq_len * sizeof(int32_t);
	Py_INCREF(put);
	ld->put = put;
	return (PyObject *)ld;
}

static PyMethodDef fast_methods[] = {
	{ "lender", make_lender, METH_VARARGS,
		"lender(fn, handle, batch, seq_len, put): one loader's lent batches" },
	{ NULL, NULL, 0, NULL },
};

static struct PyModuleDef fast_module = {
	PyModuleDef_HEAD_INIT,
	.m_name = "_fast",
	.m_doc = "TokenLoader's lent batches in C (ferry's pure-Python path is the twin)",
	.m_size = -1,
	.m_methods = fast_methods,
};

PyMODINIT_FUNC PyInit__fast(void);

PyMODINIT_FUNC PyInit__fast(void)
{
	import_array();
	if (PyType_Ready(&lent_type) < 0 || PyType_Ready(&lender_type) < 0)
		return NULL;
	return PyModule_Create(&fast_module);
}
