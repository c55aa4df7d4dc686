/*
 * The hot loop of bakup.archive.RowCounter in C: walk the length-prefixed chunks of one
 * table's data block in a pg_dump custom-format archive and count the newlines (COPY rows)
 * in them; and, for archives whose data pg_dump compressed, gather the chunks' payloads into
 * one bytes object for zlib. The pure-Python loops in archive.py do exactly the same and are
 * used when this module is not built; the unit tests check that both agree.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static const char END_OF_COPY[] = "\\.\n\n\n";

/* scan_data(buffer, pos, int_size) -> (pos, newlines, block_ended) */
static PyObject *
scan_data(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t pos;
    int int_size;
    if (!PyArg_ParseTuple(args, "y*ni", &view, &pos, &int_size))
        return NULL;
    if (int_size < 1 || int_size > 8 || pos < 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "bad integer size or position");
        return NULL;
    }
    const unsigned char *data = (const unsigned char *) view.buf;
    const Py_ssize_t end = view.len;
    const Py_ssize_t header = 1 + int_size;
    long long newlines = 0;
    int block_ended = 0;

    Py_BEGIN_ALLOW_THREADS
    while (end - pos >= header) {
        unsigned long long length = 0;
        for (int i = int_size; i >= 1; i--)
            length = (length << 8) | data[pos + i];  /* little-endian after the sign byte */
        Py_ssize_t start = pos + header;
        if (length == 0) {
            pos = start;
            block_ended = 1;
            break;
        }
        if ((unsigned long long) (end - start) < length)
            break;
        if (!(length == 5 && memcmp(data + start, END_OF_COPY, 5) == 0)) {
            const unsigned char *p = data + start;
            const unsigned char *stop = p + length;
            while ((p = memchr(p, '\n', (size_t) (stop - p))) != NULL) {
                newlines++;
                p++;
            }
        }
        pos = start + (Py_ssize_t) length;
    }
    Py_END_ALLOW_THREADS

    PyBuffer_Release(&view);
    return Py_BuildValue("nLi", pos, newlines, block_ended);
}

static unsigned long long
chunk_length(const unsigned char *data, Py_ssize_t pos, int int_size)
{
    unsigned long long length = 0;
    for (int i = int_size; i >= 1; i--)
        length = (length << 8) | data[pos + i];  /* little-endian after the sign byte */
    return length;
}

/* gather_chunks(buffer, pos, int_size) -> (pos, payload, block_ended) */
static PyObject *
gather_chunks(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t pos;
    int int_size;
    if (!PyArg_ParseTuple(args, "y*ni", &view, &pos, &int_size))
        return NULL;
    if (int_size < 1 || int_size > 8 || pos < 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "bad integer size or position");
        return NULL;
    }
    const unsigned char *data = (const unsigned char *) view.buf;
    const Py_ssize_t end = view.len;
    const Py_ssize_t header = 1 + int_size;
    int block_ended = 0;

    /* First pass: how far the whole chunks reach and how many payload bytes they hold, so
     * the result is allocated once and filled by a second pass. */
    Py_ssize_t reached = pos;
    Py_ssize_t total = 0;
    while (end - reached >= header) {
        unsigned long long length = chunk_length(data, reached, int_size);
        Py_ssize_t start = reached + header;
        if (length == 0) {
            reached = start;
            block_ended = 1;
            break;
        }
        if ((unsigned long long) (end - start) < length)
            break;
        total += (Py_ssize_t) length;
        reached = start + (Py_ssize_t) length;
    }

    PyObject *payload = PyBytes_FromStringAndSize(NULL, total);
    if (payload == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    char *out = PyBytes_AS_STRING(payload);
    Py_ssize_t at = pos;
    while (at < reached) {
        unsigned long long length = chunk_length(data, at, int_size);
        Py_ssize_t start = at + header;
        if (length == 0)
            break;
        memcpy(out, data + start, (size_t) length);
        out += length;
        at = start + (Py_ssize_t) length;
    }

    PyBuffer_Release(&view);
    PyObject *result = Py_BuildValue("nOi", reached, payload, block_ended);
    Py_DECREF(payload);
    return result;
}

static PyMethodDef methods[] = {
    {"scan_data", scan_data, METH_VARARGS,
     "scan_data(buffer, pos, int_size) -> (pos, newlines, block_ended)"},
    {"gather_chunks", gather_chunks, METH_VARARGS,
     "gather_chunks(buffer, pos, int_size) -> (pos, payload, block_ended)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "bakup._rowscan", "Fast row counting for pg_dump archives.", -1,
    methods,
};

PyMODINIT_FUNC
PyInit__rowscan(void)
{
    return PyModule_Create(&module);
}
