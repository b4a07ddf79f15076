/* test_ckpt.c — checkpoint format round trip, every corruption refused, atomic write, lock. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt.h"
#include "t.h"

static char tmp_root[512];

static void make_tmp(void)
{
    const char *base = getenv("LB_TEST_OUT");
    snprintf(tmp_root, sizeof tmp_root, "%s/ckpt.XXXXXX", base && base[0] ? base : "/tmp");
    if (!mkdtemp(tmp_root)) {
        snprintf(tmp_root, sizeof tmp_root, "/tmp/ckpt.XXXXXX");
        if (!mkdtemp(tmp_root)) perror("mkdtemp");
    }
}

/* A checkpoint with consistent totals. */
static void sample(struct lb_ckpt *c)
{
    lb_ckpt_init(c);
    static const char canon[] = "generation.top_p=1\nmodel=/m\nunit.a.base.jsonl.zst=/d/a.jsonl | base\n";
    c->canon = strdup(canon);
    c->n_canon = strlen(canon);
    c->fingerprint = 0x0123456789abcdefull;
    c->part_i = 2;
    c->part_n = 5;
    c->seq = 77;
    c->time_unix_ms = 1795000000123;
    c->elapsed_ms = 4567;
    c->n_unit = 3;
    c->units = calloc(3, sizeof *c->units);
    const char *names[3] = {"a.base.jsonl.zst", "a.sql.jsonl.zst", "b.sql.jsonl.zst"};
    for (int i = 0; i < 3; i++) {
        struct lb_ckpt_unit *u = &c->units[i];
        u->name = strdup(names[i]);
        u->out_committed_bytes = 1000 * (i + 1) + 7;
        u->in_line = 10 * (i + 1);
        u->in_offset = 3000000000ll * (i + 1); /* over 32 bits */
        u->n_rec_done = 10 * (i + 1) - i;
        u->n_rec_error = i;
        u->n_tok_prompt = 111 * (i + 1);
        u->n_tok_gen = 222 * (i + 1);
        u->flags = i == 0 ? LB_CKPT_UNIT_FINISHED : 0;
        c->n_rec_done += u->n_rec_done;
        c->n_rec_error += u->n_rec_error;
        c->n_tok_prompt += u->n_tok_prompt;
        c->n_tok_gen += u->n_tok_gen;
    }
}

static int same(const struct lb_ckpt *a, const struct lb_ckpt *b)
{
    if (a->fingerprint != b->fingerprint || a->n_canon != b->n_canon || memcmp(a->canon, b->canon, a->n_canon) ||
        a->part_i != b->part_i || a->part_n != b->part_n || a->finished != b->finished || a->seq != b->seq ||
        a->time_unix_ms != b->time_unix_ms || a->elapsed_ms != b->elapsed_ms || a->n_rec_done != b->n_rec_done ||
        a->n_rec_error != b->n_rec_error || a->n_tok_prompt != b->n_tok_prompt || a->n_tok_gen != b->n_tok_gen ||
        a->n_unit != b->n_unit)
        return 0;
    for (int i = 0; i < a->n_unit; i++) {
        const struct lb_ckpt_unit *x = &a->units[i], *y = &b->units[i];
        if (strcmp(x->name, y->name) || x->out_committed_bytes != y->out_committed_bytes ||
            x->in_offset != y->in_offset || x->in_line != y->in_line || x->n_rec_done != y->n_rec_done ||
            x->n_rec_error != y->n_rec_error || x->n_tok_prompt != y->n_tok_prompt || x->n_tok_gen != y->n_tok_gen ||
            x->flags != y->flags)
            return 0;
    }
    return 1;
}

static void test_crc32(void)
{
    T_CHECK(lb_crc32(0, "123456789", 9) == 0xCBF43926u, "crc %08x", lb_crc32(0, "123456789", 9));
    T_CHECK(lb_crc32(0, "", 0) == 0, "empty");
    /* chaining equals one pass */
    T_CHECK(lb_crc32(lb_crc32(0, "1234", 4), "56789", 5) == 0xCBF43926u, "chained");
    T_CHECK(lb_crc32(0, "The quick brown fox jumps over the lazy dog", 43) == 0x414FA339u, "fox");
}

static void test_roundtrip(void)
{
    struct lb_ckpt a, b;
    sample(&a);
    lb_ckpt_init(&b);
    unsigned char *buf;
    size_t n;
    struct lb_err err = {0};
    T_CHECK(lb_ckpt_serialize(&a, &buf, &n, &err) == 0, "%s", err.msg);
    T_CHECK(memcmp(buf, "LBCKPT\r\n", 8) == 0, "magic");
    T_CHECK(buf[8] == 1 && buf[9] == 0 && buf[10] == 0 && buf[11] == 0, "version LE");
    T_CHECK(buf[12] == (n & 0xFF) && buf[13] == ((n >> 8) & 0xFF), "length LE");
    T_CHECK(buf[16] == 0xef && buf[23] == 0x01, "fingerprint little-endian");
    T_CHECK(lb_ckpt_parse(&b, buf, n, &err) == 0, "%s", err.msg);
    T_CHECK(same(&a, &b), "round trip differs");
    /* parsing twice into the same struct frees the first result (ASan checks) */
    T_CHECK(lb_ckpt_parse(&b, buf, n, &err) == 0, "%s", err.msg);
    T_CHECK(same(&a, &b), "second parse differs");
    free(buf);
    lb_ckpt_free(&b);

    /* finished job, zero units, empty canon */
    lb_ckpt_free(&a);
    lb_ckpt_init(&a);
    a.finished = 1;
    T_CHECK(lb_ckpt_serialize(&a, &buf, &n, &err) == 0, "%s", err.msg);
    lb_ckpt_init(&b);
    T_CHECK(lb_ckpt_parse(&b, buf, n, &err) == 0, "%s", err.msg);
    T_CHECK(b.finished == 1 && b.n_unit == 0 && b.n_canon == 0 && b.part_n == 1, "empty round trip");
    free(buf);
    lb_ckpt_free(&a);
    lb_ckpt_free(&b);
}

static void fix_crc(unsigned char *buf, size_t n)
{
    uint32_t c = lb_crc32(0, buf, n - 4);
    for (int i = 0; i < 4; i++) buf[n - 4 + i] = (unsigned char)(c >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void expect_corrupt(const unsigned char *buf, size_t n, const char *substr, const char *what)
{
    struct lb_ckpt c;
    lb_ckpt_init(&c);
    struct lb_err err = {0};
    int rc = lb_ckpt_parse(&c, buf, n, &err);
    T_CHECK(rc == LB_E_CORRUPT, "%s: rc %d", what, rc);
    T_CHECK(!substr || strstr(err.msg, substr), "%s: message \"%s\" lacks \"%s\"", what, err.msg, substr);
    lb_ckpt_free(&c);
}

static void test_corruption(void)
{
    struct lb_ckpt a;
    sample(&a);
    unsigned char *buf, *m;
    size_t n;
    struct lb_err err = {0};
    T_CHECK(lb_ckpt_serialize(&a, &buf, &n, &err) == 0, "%s", err.msg);
    m = malloc(n + 8);

    /* every truncation */
    int bad = 0;
    for (size_t k = 0; k < n; k++) {
        struct lb_ckpt c;
        lb_ckpt_init(&c);
        memcpy(m, buf, k);
        if (lb_ckpt_parse(&c, m, k, &err) != LB_E_CORRUPT) bad++;
        lb_ckpt_free(&c);
    }
    T_CHECK(bad == 0, "%d truncations accepted", bad);
    memcpy(m, buf, n);
    expect_corrupt(m, n / 2, "truncated", "half file");

    /* every single-bit flip */
    bad = 0;
    for (size_t k = 0; k < n; k++)
        for (int bit = 0; bit < 8; bit++) {
            struct lb_ckpt c;
            lb_ckpt_init(&c);
            memcpy(m, buf, n);
            m[k] ^= (unsigned char)(1 << bit);
            if (lb_ckpt_parse(&c, m, n, &err) != LB_E_CORRUPT) bad++;
            lb_ckpt_free(&c);
        }
    T_CHECK(bad == 0, "%d bit flips accepted", bad);

    memcpy(m, buf, n);
    m[0] = 'X';
    expect_corrupt(m, n, "bad magic", "magic");
    memcpy(m, buf, n);
    m[n] = 0;
    expect_corrupt(m, n + 1, "trailing bytes", "extra byte");
    memcpy(m, buf, n);
    m[n / 2] ^= 0x40;
    expect_corrupt(m, n, "CRC mismatch", "crc");

    /* semantic checks, with a valid CRC so the field check is what refuses */
    memcpy(m, buf, n);
    m[8] = 2;
    fix_crc(m, n);
    expect_corrupt(m, n, "version 2", "version");
    memcpy(m, buf, n);
    put64(m + 64, 5); /* total records no longer the sum */
    fix_crc(m, n);
    expect_corrupt(m, n, "totals do not match", "totals");
    memcpy(m, buf, n);
    m[24] = 9; /* part 9/5 */
    fix_crc(m, n);
    expect_corrupt(m, n, "part 9/5", "part");
    memcpy(m, buf, n);
    m[32] = 1; /* finished while units are not */
    fix_crc(m, n);
    expect_corrupt(m, n, "finished flag", "finished");
    size_t off_nunit = 96 + 4 + a.n_canon;
    memcpy(m, buf, n);
    m[off_nunit + 3] = 0x7f; /* a huge unit count */
    fix_crc(m, n);
    expect_corrupt(m, n, "unit count too large", "n_unit");
    size_t off_canon = 96;
    memcpy(m, buf, n);
    m[off_canon + 2] = 0x10; /* canon length past the end */
    fix_crc(m, n);
    expect_corrupt(m, n, "canonical text overruns", "n_canon");
    size_t off_u0 = off_nunit + 4;
    size_t nn0 = strlen(a.units[0].name);
    memcpy(m, buf, n);
    put64(m + off_u0 + 4 + nn0 + 8 * 3, (uint64_t)-1); /* unit 0 n_rec_done = -1 */
    fix_crc(m, n);
    expect_corrupt(m, n, "unit 0: negative", "negative counter");
    memcpy(m, buf, n);
    put64(m + off_u0 + 4 + nn0 + 8 * 2, 1); /* in_line 1 < n_rec_done 10 */
    fix_crc(m, n);
    expect_corrupt(m, n, "unit 0: inconsistent", "inconsistent unit");
    memcpy(m, buf, n);
    m[off_u0] = 0xff; /* name length overruns */
    fix_crc(m, n);
    expect_corrupt(m, n, "unit 0: name of", "name length");
    /* counters whose sum over units passes INT64_MAX (found by tests/fuzz: was signed overflow) */
    {
        size_t off_u1 = off_u0 + 4 + nn0 + 60, nn1 = strlen(a.units[1].name);
        memcpy(m, buf, n);
        put64(m + off_u0 + 4 + nn0 + 8 * 6, (uint64_t)INT64_MAX - 5); /* unit 0 n_tok_gen */
        put64(m + off_u1 + 4 + nn1 + 8 * 6, (uint64_t)INT64_MAX - 5); /* unit 1 n_tok_gen */
        fix_crc(m, n);
        expect_corrupt(m, n, "overflow", "counters overflowing their sum");
    }
    free(m);
    free(buf);
    lb_ckpt_free(&a);
}

static void test_file(void)
{
    char path[600], tmp[700], dir_missing[700];
    snprintf(path, sizeof path, "%s/state.ckpt", tmp_root);
    struct lb_ckpt a, b;
    struct lb_err err = {0};
    int found = 1;
    lb_ckpt_init(&b);
    T_CHECK(lb_ckpt_read(path, &b, &found, &err) == 0 && found == 0, "missing file: found=%d %s", found, err.msg);
    sample(&a);
    T_CHECK(lb_ckpt_write(path, &a, &err) == 0, "%s", err.msg);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    T_CHECK(access(tmp, F_OK) != 0, "temp file left behind");
    T_CHECK(lb_ckpt_read(path, &b, &found, &err) == 0 && found == 1, "%s", err.msg);
    T_CHECK(same(&a, &b), "file round trip");
    a.seq++;
    a.units[1].out_committed_bytes += 500;
    T_CHECK(lb_ckpt_write(path, &a, &err) == 0, "%s", err.msg); /* replaces */
    T_CHECK(lb_ckpt_read(path, &b, &found, &err) == 0 && b.seq == 78 && b.units[1].out_committed_bytes == 2507,
            "second write not seen");
    /* damaged on disk: reader names the file and the reason */
    FILE *f = fopen(path, "r+b");
    fseek(f, 20, SEEK_SET);
    fputc(0x55, f);
    fclose(f);
    int rc = lb_ckpt_read(path, &b, &found, &err);
    T_CHECK(rc == LB_E_CORRUPT && strstr(err.msg, path) && strstr(err.msg, "CRC"), "rc %d: %s", rc, err.msg);
    snprintf(dir_missing, sizeof dir_missing, "%s/no/such/dir/c.ckpt", tmp_root);
    rc = lb_ckpt_write(dir_missing, &a, &err);
    T_CHECK(rc == LB_E_IO && strstr(err.msg, "no/such/dir"), "rc %d: %s", rc, err.msg);

    char p[256];
    lb_ckpt_path(p, sizeof p, "/o", 0, 1);
    T_CHECK(!strcmp(p, "/o/.lorabatch.ckpt"), "%s", p);
    lb_ckpt_path(p, sizeof p, "/o", 3, 8);
    T_CHECK(!strcmp(p, "/o/.lorabatch.part-3-of-8.ckpt"), "%s", p);
    lb_ckpt_free(&a);
    lb_ckpt_free(&b);
}

static void test_lock(void)
{
    struct lb_lock a, b, c, d;
    struct lb_err err = {0};
    char pid[32];
    snprintf(pid, sizeof pid, "pid %ld", (long)getpid());
    T_CHECK(lb_lock_acquire(&a, tmp_root, 0, 1, &err) == 0, "%s", err.msg);
    int rc = lb_lock_acquire(&b, tmp_root, 0, 1, &err);
    T_CHECK(rc == LB_E_IO && strstr(err.msg, pid) && strstr(err.msg, tmp_root), "second lock: rc %d %s", rc, err.msg);
    rc = lb_lock_acquire(&b, tmp_root, 1, 4, &err);
    T_CHECK(rc == LB_E_IO && strstr(err.msg, "whole-job run"), "part while whole held: rc %d %s", rc, err.msg);
    lb_lock_release(&b); /* failed lock: release is a no-op */
    lb_lock_release(&a);
    T_CHECK(lb_lock_acquire(&a, tmp_root, 1, 4, &err) == 0, "part 1: %s", err.msg);
    T_CHECK(lb_lock_acquire(&b, tmp_root, 2, 4, &err) == 0, "part 2 beside part 1: %s", err.msg);
    rc = lb_lock_acquire(&c, tmp_root, 1, 4, &err);
    T_CHECK(rc == LB_E_IO && strstr(err.msg, "part 1/4") && strstr(err.msg, pid), "same part twice: rc %d %s", rc,
            err.msg);
    rc = lb_lock_acquire(&d, tmp_root, 0, 1, &err);
    T_CHECK(rc == LB_E_IO && strstr(err.msg, "in use"), "whole while parts run: rc %d %s", rc, err.msg);
    lb_lock_release(&a);
    lb_lock_release(&b);
    T_CHECK(lb_lock_acquire(&d, tmp_root, 0, 1, &err) == 0, "after release: %s", err.msg);
    lb_lock_release(&d);
    lb_lock_release(&d); /* twice is fine */
    char missing[700];
    snprintf(missing, sizeof missing, "%s/nope", tmp_root);
    rc = lb_lock_acquire(&a, missing, 0, 1, &err);
    T_CHECK(rc == LB_E_IO && strstr(err.msg, "cannot lock"), "missing folder: rc %d %s", rc, err.msg);
}

int main(void)
{
    make_tmp();
    T_RUN(test_crc32);
    T_RUN(test_roundtrip);
    T_RUN(test_corruption);
    T_RUN(test_file);
    T_RUN(test_lock);
    return T_DONE();
}
