/* ckpt.c — see ckpt.h. */
#include "ckpt.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAGIC "LBCKPT\r\n"
#define HEAD_BYTES 96u        /* magic .. totals, fixed part */
#define UNIT_FIXED_BYTES 64u  /* n_name + 7 i64 + flags */
#define MAX_NAME 65536u
#define MAX_FILE ((size_t)1 << 30)

/* ------------------------------------------------------------------ crc32 */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_build(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

uint32_t lb_crc32(uint32_t crc, const void *p, size_t n)
{
    pthread_once(&crc_once, crc_build);
    const unsigned char *b = p;
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = crc_table[(crc ^ b[i]) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

/* ------------------------------------------------------------------ struct */

void lb_ckpt_init(struct lb_ckpt *c)
{
    memset(c, 0, sizeof *c);
    c->part_n = 1;
}

void lb_ckpt_free(struct lb_ckpt *c)
{
    if (!c) return;
    for (int i = 0; i < c->n_unit; i++) free(c->units[i].name);
    free(c->units);
    free(c->canon);
    memset(c, 0, sizeof *c);
}

/* ------------------------------------------------------------------ encoding */

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
    return v;
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

int lb_ckpt_serialize(const struct lb_ckpt *c, unsigned char **buf, size_t *n, struct lb_err *err)
{
    *buf = NULL;
    *n = 0;
    if (c->n_canon > UINT32_MAX / 2 || c->n_unit < 0)
        return lb_err_set(err, LB_E_INTERNAL, "checkpoint: canonical text or unit count out of range");
    size_t total = HEAD_BYTES + 4 + c->n_canon + 4 + 4;
    for (int i = 0; i < c->n_unit; i++) {
        size_t nn = c->units[i].name ? strlen(c->units[i].name) : 0;
        if (nn > MAX_NAME) return lb_err_set(err, LB_E_INTERNAL, "checkpoint: unit name over %u bytes", MAX_NAME);
        total += UNIT_FIXED_BYTES + nn;
    }
    if (total > MAX_FILE) return lb_err_set(err, LB_E_INTERNAL, "checkpoint: %zu bytes, over the 1 GiB limit", total);
    unsigned char *b = calloc(1, total);
    if (!b) return lb_err_set(err, LB_E_OOM, "checkpoint: out of memory (%zu bytes)", total);
    unsigned char *p = b;
    memcpy(p, MAGIC, 8);
    put_u32(p + 8, LB_CKPT_VERSION);
    put_u32(p + 12, (uint32_t)total);
    put_u64(p + 16, c->fingerprint);
    put_u32(p + 24, (uint32_t)c->part_i);
    put_u32(p + 28, (uint32_t)c->part_n);
    put_u32(p + 32, c->finished ? 1u : 0u);
    put_u32(p + 36, 0);
    put_u64(p + 40, c->seq);
    put_u64(p + 48, (uint64_t)c->time_unix_ms);
    put_u64(p + 56, (uint64_t)c->elapsed_ms);
    put_u64(p + 64, (uint64_t)c->n_rec_done);
    put_u64(p + 72, (uint64_t)c->n_rec_error);
    put_u64(p + 80, (uint64_t)c->n_tok_prompt);
    put_u64(p + 88, (uint64_t)c->n_tok_gen);
    p += HEAD_BYTES;
    put_u32(p, (uint32_t)c->n_canon);
    if (c->n_canon) memcpy(p + 4, c->canon, c->n_canon);
    p += 4 + c->n_canon;
    put_u32(p, (uint32_t)c->n_unit);
    p += 4;
    for (int i = 0; i < c->n_unit; i++) {
        const struct lb_ckpt_unit *u = &c->units[i];
        uint32_t nn = u->name ? (uint32_t)strlen(u->name) : 0;
        put_u32(p, nn);
        if (nn) memcpy(p + 4, u->name, nn);
        p += 4 + nn;
        int64_t v[7] = {u->out_committed_bytes, u->in_offset, u->in_line, u->n_rec_done,
                        u->n_rec_error, u->n_tok_prompt, u->n_tok_gen};
        for (int k = 0; k < 7; k++) put_u64(p + 8 * k, (uint64_t)v[k]);
        put_u32(p + 56, u->flags);
        p += 60;
    }
    put_u32(p, lb_crc32(0, b, (size_t)(p - b)));
    *buf = b;
    *n = total;
    return 0;
}

static int corrupt(struct lb_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int corrupt(struct lb_err *err, const char *fmt, ...)
{
    char m[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    return lb_err_set(err, LB_E_CORRUPT, "checkpoint: %s", m);
}

int lb_ckpt_parse(struct lb_ckpt *c, const unsigned char *buf, size_t n, struct lb_err *err)
{
    lb_ckpt_free(c);
    lb_ckpt_init(c);
    if (n < 8 || memcmp(buf, MAGIC, 8))
        return lb_err_set(err, LB_E_CORRUPT, "checkpoint: bad magic (not a lorabatch checkpoint)");
    if (n < 16) return lb_err_set(err, LB_E_CORRUPT, "checkpoint: truncated header (%zu bytes)", n);
    uint32_t version = get_u32(buf + 8);
    if (version != LB_CKPT_VERSION)
        return lb_err_set(err, LB_E_CORRUPT, "checkpoint: version %u, this lorabatch reads version %d (use --restart)",
                          version, LB_CKPT_VERSION);
    uint32_t total = get_u32(buf + 12);
    if (total != n)
        return lb_err_set(err, LB_E_CORRUPT, "checkpoint: %s: header says %u bytes, file has %zu",
                          n < total ? "truncated" : "trailing bytes", total, n);
    if (n < HEAD_BYTES + 4 + 4 + 4) return lb_err_set(err, LB_E_CORRUPT, "checkpoint: truncated (%zu bytes)", n);
    uint32_t crc = get_u32(buf + n - 4), want = lb_crc32(0, buf, n - 4);
    if (crc != want)
        return lb_err_set(err, LB_E_CORRUPT, "checkpoint: CRC mismatch (stored %08x, computed %08x)", crc, want);

    const unsigned char *p = buf, *end = buf + n - 4;
    c->fingerprint = get_u64(p + 16);
    c->part_i = (int32_t)get_u32(p + 24);
    c->part_n = (int32_t)get_u32(p + 28);
    uint32_t flags = get_u32(p + 32);
    c->seq = get_u64(p + 40);
    c->time_unix_ms = (int64_t)get_u64(p + 48);
    c->elapsed_ms = (int64_t)get_u64(p + 56);
    c->n_rec_done = (int64_t)get_u64(p + 64);
    c->n_rec_error = (int64_t)get_u64(p + 72);
    c->n_tok_prompt = (int64_t)get_u64(p + 80);
    c->n_tok_gen = (int64_t)get_u64(p + 88);
    if (c->part_n < 1 || c->part_i < 0 || c->part_i >= c->part_n)
        return corrupt(err, "part %d/%d out of range", (int)c->part_i, (int)c->part_n);
    if (flags & ~1u || get_u32(p + 36)) return corrupt(err, "unknown flags (%08x, %08x)", flags, get_u32(p + 36));
    c->finished = (int)(flags & 1u);
    if (c->elapsed_ms < 0 || c->n_rec_done < 0 || c->n_rec_error < 0 || c->n_tok_prompt < 0 || c->n_tok_gen < 0 ||
        c->n_rec_error > c->n_rec_done)
        return corrupt(err, "negative or inconsistent totals (records %lld, errors %lld)", (long long)c->n_rec_done,
                       (long long)c->n_rec_error);
    p += HEAD_BYTES;
    uint32_t n_canon = get_u32(p);
    p += 4;
    if (n_canon > (size_t)(end - p)) return corrupt(err, "canonical text overruns: %u bytes, %zu left", n_canon, (size_t)(end - p));
    c->canon = malloc((size_t)n_canon + 1);
    if (!c->canon) return lb_err_set(err, LB_E_OOM, "checkpoint: out of memory");
    memcpy(c->canon, p, n_canon);
    c->canon[n_canon] = 0;
    c->n_canon = n_canon;
    p += n_canon;
    if (end - p < 4) return corrupt(err, "truncated before the unit count");
    uint32_t n_unit = get_u32(p);
    p += 4;
    if (n_unit > (size_t)(end - p) / UNIT_FIXED_BYTES)
        return corrupt(err, "unit count too large: %u units cannot fit in %zu bytes", n_unit, (size_t)(end - p));
    c->units = calloc(n_unit ? n_unit : 1, sizeof *c->units);
    if (!c->units) return lb_err_set(err, LB_E_OOM, "checkpoint: out of memory");
    int64_t sum[4] = {0};
    int all_finished = 1;
    for (uint32_t i = 0; i < n_unit; i++) {
        if (end - p < 4) return corrupt(err, "truncated unit %u of %u", i, n_unit);
        uint32_t nn = get_u32(p);
        p += 4;
        if (nn > MAX_NAME || nn + 60u > (size_t)(end - p))
            return corrupt(err, "unit %u: name of %u bytes overruns", i, nn);
        struct lb_ckpt_unit *u = &c->units[i];
        u->name = malloc((size_t)nn + 1);
        if (!u->name) return lb_err_set(err, LB_E_OOM, "checkpoint: out of memory");
        c->n_unit = (int)i + 1;
        memcpy(u->name, p, nn);
        u->name[nn] = 0;
        if (strlen(u->name) != nn) return corrupt(err, "unit %u: name holds a NUL byte", i);
        p += nn;
        int64_t v[7];
        for (int k = 0; k < 7; k++) v[k] = (int64_t)get_u64(p + 8 * k);
        u->out_committed_bytes = v[0];
        u->in_offset = v[1];
        u->in_line = v[2];
        u->n_rec_done = v[3];
        u->n_rec_error = v[4];
        u->n_tok_prompt = v[5];
        u->n_tok_gen = v[6];
        u->flags = get_u32(p + 56);
        p += 60;
        for (int k = 0; k < 7; k++)
            if (v[k] < 0) return corrupt(err, "unit %u: negative field %d", i, k);
        if (u->in_line > u->in_offset || u->n_rec_error > u->n_rec_done || u->n_rec_done > u->in_line)
            return corrupt(err, "unit %u: inconsistent counters (offset %lld, lines %lld, done %lld, errors %lld)", i, (long long)u->in_offset, (long long)u->in_line, (long long)u->n_rec_done, (long long)u->n_rec_error);
        if (u->flags & ~LB_CKPT_UNIT_FINISHED) return corrupt(err, "unit %u: unknown flags %08x", i, u->flags);
        if (!(u->flags & LB_CKPT_UNIT_FINISHED)) all_finished = 0;
        /* each field is >= 0 here; a sum past INT64_MAX cannot match the totals */
        if (__builtin_add_overflow(sum[0], u->n_rec_done, &sum[0]) || __builtin_add_overflow(sum[1], u->n_rec_error, &sum[1]) ||
            __builtin_add_overflow(sum[2], u->n_tok_prompt, &sum[2]) || __builtin_add_overflow(sum[3], u->n_tok_gen, &sum[3]))
            return corrupt(err, "unit %u: counters overflow their sum over units", i);
    }
    if (p != end) return corrupt(err, "trailing data: %zu bytes left after %u units", (size_t)(end - p), n_unit);
    if (sum[0] != c->n_rec_done || sum[1] != c->n_rec_error || sum[2] != c->n_tok_prompt || sum[3] != c->n_tok_gen)
        return corrupt(err, "totals do not match the units (records %lld, sum over units %lld)", (long long)c->n_rec_done, (long long)sum[0]);
    if (c->finished && !all_finished) return corrupt(err, "finished flag set with unfinished units");
    return 0;
}

/* ------------------------------------------------------------------ files */

static int fsync_dir_of(const char *path)
{
    char *d = strdup(path);
    if (!d) return -1;
    char *s = strrchr(d, '/');
    if (s == d) s[1] = 0;
    else if (s) *s = 0;
    else strcpy(d, ".");
    int fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(d);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    if (rc && (errno == EINVAL || errno == EROFS)) rc = 0; /* folders some file systems cannot sync */
    close(fd);
    return rc;
}

int lb_ckpt_write(const char *path, const struct lb_ckpt *c, struct lb_err *err)
{
    unsigned char *buf = NULL;
    size_t n = 0;
    int fd = -1, rc = lb_ckpt_serialize(c, &buf, &n, err);
    char tmp[PATH_MAX];
    if (rc) return rc;
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        rc = lb_err_set(err, LB_E_IO, "checkpoint %s: path too long", path);
        goto done;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = lb_err_set(err, LB_E_IO, "checkpoint %s: cannot create: %s", tmp, strerror(errno));
        goto done;
    }
    for (size_t k = 0; k < n;) {
        ssize_t w = write(fd, buf + k, n - k);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            rc = lb_err_set(err, LB_E_IO, "checkpoint %s: write failed: %s", tmp, w ? strerror(errno) : "no progress");
            goto done;
        }
        k += (size_t)w;
    }
    if (fsync(fd)) {
        rc = lb_err_set(err, LB_E_IO, "checkpoint %s: fsync failed: %s", tmp, strerror(errno));
        goto done;
    }
    close(fd);
    fd = -1;
    if (rename(tmp, path)) {
        rc = lb_err_set(err, LB_E_IO, "checkpoint %s: rename from %s failed: %s", path, tmp, strerror(errno));
        goto done;
    }
    if (fsync_dir_of(path)) rc = lb_err_set(err, LB_E_IO, "checkpoint %s: fsync of its folder failed: %s", path,
                                            strerror(errno));
done:
    if (fd >= 0) close(fd);
    if (rc) unlink(tmp); /* harmless when already renamed: the name is gone */
    free(buf);
    return rc;
}

int lb_ckpt_read(const char *path, struct lb_ckpt *c, int *found, struct lb_err *err)
{
    *found = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return 0;
        return lb_err_set(err, LB_E_IO, "checkpoint %s: cannot open: %s", path, strerror(errno));
    }
    *found = 1;
    unsigned char *buf = NULL;
    int rc = 0;
    struct stat st;
    if (fstat(fd, &st)) {
        rc = lb_err_set(err, LB_E_IO, "checkpoint %s: stat failed: %s", path, strerror(errno));
        goto done;
    }
    if ((uint64_t)st.st_size > MAX_FILE) {
        rc = lb_err_set(err, LB_E_CORRUPT, "checkpoint %s: %lld bytes, larger than any checkpoint", path,
                        (long long)st.st_size);
        goto done;
    }
    size_t n = (size_t)st.st_size, k = 0;
    buf = malloc(n ? n : 1);
    if (!buf) {
        rc = lb_err_set(err, LB_E_OOM, "checkpoint %s: out of memory", path);
        goto done;
    }
    while (k < n) {
        ssize_t r = read(fd, buf + k, n - k);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            rc = lb_err_set(err, LB_E_IO, "checkpoint %s: read failed: %s", path, strerror(errno));
            goto done;
        }
        if (r == 0) break;
        k += (size_t)r;
    }
    rc = lb_ckpt_parse(c, buf, k, err);
    if (rc) lb_err_prefix(err, "%s", path);
done:
    close(fd);
    free(buf);
    return rc;
}

int lb_ckpt_path(char *buf, size_t cap, const char *out_dir, int part_i, int part_n)
{
    if (part_n <= 1) return snprintf(buf, cap, "%s/.lorabatch.ckpt", out_dir);
    return snprintf(buf, cap, "%s/.lorabatch.part-%d-of-%d.ckpt", out_dir, part_i, part_n);
}

/* ------------------------------------------------------------------ lock */

/* Opens and flocks name in dir. Returns the fd, -1 when held by another (holder text in
 * who), or -2 on another error (errno kept). */
static int lock_file(const char *path, int how, char *who, size_t n_who)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return -2;
    while (flock(fd, how | LOCK_NB)) {
        if (errno == EINTR) continue;
        int e = errno;
        if (e == EWOULDBLOCK) {
            ssize_t r = pread(fd, who, n_who - 1, 0);
            who[r > 0 ? r : 0] = 0;
            char *nl = strchr(who, '\n');
            if (nl) *nl = 0;
            close(fd);
            return -1;
        }
        close(fd);
        errno = e;
        return -2;
    }
    return fd;
}

static void write_holder(int fd)
{
    char host[256] = "?", line[400];
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = 0;
    int n = snprintf(line, sizeof line, "pid %ld host %s\n", (long)getpid(), host);
    if (ftruncate(fd, 0) == 0 && pwrite(fd, line, (size_t)n, 0) == n) fsync(fd);
}

int lb_lock_acquire(struct lb_lock *lk, const char *dir, int part_i, int part_n, struct lb_err *err)
{
    lk->fd = lk->fd_shared = -1;
    char main_path[PATH_MAX], part_path[PATH_MAX], who[300];
    snprintf(main_path, sizeof main_path, "%s/.lock", dir);
    snprintf(part_path, sizeof part_path, "%s/.lock.part-%d-of-%d", dir, part_i, part_n);
    if (part_n <= 1) {
        int fd = lock_file(main_path, LOCK_EX, who, sizeof who);
        if (fd == -1)
            return lb_err_set(err, LB_E_IO, "output folder %s is in use by another run (%s)", dir,
                              who[0] ? who : "--part runs of this job");
        if (fd < 0) return lb_err_set(err, LB_E_IO, "output folder %s: cannot lock %s: %s", dir, main_path, strerror(errno));
        write_holder(fd);
        lk->fd = fd;
        return 0;
    }
    int fs = lock_file(main_path, LOCK_SH, who, sizeof who);
    if (fs == -1)
        return lb_err_set(err, LB_E_IO, "output folder %s is in use by a whole-job run (%s)", dir,
                          who[0] ? who : "holder unknown");
    if (fs < 0) return lb_err_set(err, LB_E_IO, "output folder %s: cannot lock %s: %s", dir, main_path, strerror(errno));
    int fd = lock_file(part_path, LOCK_EX, who, sizeof who);
    if (fd < 0) {
        int e = errno;
        close(fs);
        if (fd == -1)
            return lb_err_set(err, LB_E_IO, "output folder %s: part %d/%d is in use by another run (%s)", dir, part_i,
                              part_n, who[0] ? who : "holder unknown");
        return lb_err_set(err, LB_E_IO, "output folder %s: cannot lock %s: %s", dir, part_path, strerror(e));
    }
    write_holder(fd);
    lk->fd = fd;
    lk->fd_shared = fs;
    return 0;
}

void lb_lock_release(struct lb_lock *lk)
{
    if (!lk) return;
    if (lk->fd >= 0 && ftruncate(lk->fd, 0) == 0) {} /* no stale holder text for the next refusal */
    if (lk->fd >= 0) close(lk->fd);
    if (lk->fd_shared >= 0) close(lk->fd_shared);
    lk->fd = lk->fd_shared = -1;
}
