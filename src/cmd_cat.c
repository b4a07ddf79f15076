/* cmd_cat.c — `lorabatch cat FILE...`: the output files (.jsonl.zst, one zstd frame per commit)
 * decompressed to standard output, every frame in order, for machines without the zstd program.
 * A file that ends inside a frame (a run still writing it, or a copy cut short) is an error that
 * names the file and the byte offset of the last whole frame. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "cli.h"

static int cat_one(const char *path, ZSTD_DCtx *dc, void *ib, size_t ibn, void *ob, size_t obn)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "lorabatch cat: %s: %s\n", path, strerror(errno));
        return LB_EXIT_IO;
    }
    ZSTD_DCtx_reset(dc, ZSTD_reset_session_only);
    size_t n, hint = 0;       /* hint: 0 after a whole frame */
    long long at = 0, frame_end = 0;
    while ((n = fread(ib, 1, ibn, f)) > 0) {
        ZSTD_inBuffer in = {ib, n, 0};
        while (in.pos < in.size) {
            ZSTD_outBuffer out = {ob, obn, 0};
            size_t before = in.pos;
            hint = ZSTD_decompressStream(dc, &out, &in);
            if (ZSTD_isError(hint)) {
                fprintf(stderr, "lorabatch cat: %s: not zstd data or damaged near byte %lld: %s\n", path,
                        at + (long long)before, ZSTD_getErrorName(hint));
                fclose(f);
                return LB_EXIT_IO;
            }
            if (out.pos && fwrite(ob, 1, out.pos, stdout) != out.pos) {
                fprintf(stderr, "lorabatch cat: writing the output: %s\n", strerror(errno));
                fclose(f);
                return LB_EXIT_IO;
            }
            if (hint == 0) frame_end = at + (long long)in.pos;
        }
        at += (long long)n;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        fprintf(stderr, "lorabatch cat: %s: read error\n", path);
        return LB_EXIT_IO;
    }
    if (hint != 0) {
        fprintf(stderr, "lorabatch cat: %s: ends inside a zstd frame (whole frames up to byte %lld of %lld)\n", path,
                frame_end, at);
        return LB_EXIT_IO;
    }
    return 0;
}

int lb_cmd_cat(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: lorabatch cat FILE.jsonl.zst...   (output files decompressed to standard output)\n");
        return LB_EXIT_USAGE;
    }
    size_t ibn = ZSTD_DStreamInSize(), obn = ZSTD_DStreamOutSize();
    void *ib = malloc(ibn), *ob = malloc(obn);
    ZSTD_DCtx *dc = ZSTD_createDCtx();
    int rc = 0;
    if (!ib || !ob || !dc) {
        fprintf(stderr, "lorabatch cat: out of memory\n");
        rc = LB_EXIT_INTERNAL;
    }
    for (int i = 2; i < argc && !rc; i++) rc = cat_one(argv[i], dc, ib, ibn, ob, obn);
    ZSTD_freeDCtx(dc);
    free(ib);
    free(ob);
    if (fflush(stdout)) rc = rc ? rc : LB_EXIT_IO;
    return rc;
}
