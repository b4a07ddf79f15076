/* torchbin.h — read torch.save files (old PEFT `adapter_model.bin`) as data, never as code.
 *
 * A torch >= 1.6 save is a ZIP archive of stored (uncompressed) members under one folder
 * `<prefix>/`: `data.pkl` (a pickle describing the object), `data/<key>` (raw storage bytes,
 * little-endian), `version`, usually `byteorder`, and on newer torch `.data/...` records.
 * torch's writer (miniz with the ZIP64 flag) always ends the archive with a ZIP64 end record,
 * so ZIP64 is implemented, not refused.
 *
 * data.pkl is run through a small pickle machine that knows only the opcodes torch writes and
 * builds plain values (dicts, tuples, strings, ints). The only callables it accepts are
 * collections.OrderedDict, torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter
 * (and _with_state) and the torch.*Storage type names; they are interpreted, not called. Any
 * other GLOBAL is refused with LB_E_UNSUPPORTED naming it.
 *
 * The result is the same struct as safetensors: the top-level dict {name: tensor} becomes
 * f->tensors sorted by name, each pointing at its element storage_offset inside the stored
 * member `<prefix>/data/<key>`. Accepted dtypes: BFloat16Storage, HalfStorage, FloatStorage
 * (BF16, F16, F32); tensors must be row-major contiguous (size-1 dimensions may have any stride).
 * Not supported: legacy pre-1.6 (non-ZIP) saves, compressed or encrypted members, big-endian
 * files, nested containers, tensor subclasses. CRCs are not checked (torch can write 0). */
#ifndef LB_TORCHBIN_H
#define LB_TORCHBIN_H

#include <stddef.h>

#include "err.h"
#include "safetensors.h"

/* Parse a torch.save ZIP image in buf[0..n) (borrowed: tensors point into buf, which must
 * outlive f). Fills f->tensors / f->n_tensor only; f->path and f->map are left alone.
 * Returns 0, or LB_E_CORRUPT (damaged or inconsistent file, with the reason),
 * LB_E_UNSUPPORTED (valid but outside what is handled: dtype, layout, callable, ZIP feature),
 * LB_E_OOM. On failure f->tensors is NULL and n_tensor 0. Release with lb_st_free. */
int lb_torchbin_parse(struct lb_st_file *f, const void *buf, size_t n, struct lb_err *err);

/* mmap the file, then parse; f->map owns the mapping (lb_st_free releases it). Errors are
 * prefixed with the path; a missing file is LB_E_INPUT. On failure f is released. */
int lb_torchbin_open(struct lb_st_file *f, const char *path, struct lb_err *err);

#endif
