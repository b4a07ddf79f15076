/* fuzz_parsers.c — libFuzzer entry points for every parser that takes untrusted bytes. One
 * source, one binary per target: compiled with -DFUZZ_<TARGET> (tests/fuzz/run.sh builds them
 * with clang, ASan and UBSan, and runs each for a while from the seeds in tests/fuzz/seeds/).
 *
 *   safetensors  lb_st_parse on the whole input (a model or adapter file)
 *   torchbin     lb_torchbin_parse (adapter_model.bin: a ZIP with a pickle)
 *   config       lb_model_config_parse, then lb_model_genconfig_parse, on the same text
 *   job          lb_job_parse (the YAML job file)
 *   record       lb_record_parse (one input JSONL line)
 *   ckpt         lb_ckpt_parse (the checkpoint file; inputs with its magic get a valid length and CRC)
 *   adaptercfg   lb_adapter_open with the input as adapter_config.json, beside a real adapter's
 *                weights, against the fixture llama3 model (targets as lists and regexes, rank and
 *                alpha patterns, layers_to_transform: untrusted JSON and regexes)
 *   tokjson      lb_tok_load_buf (tokenizer.json), then encode/decode a fixed text with it
 *   tokenize     the fixture llama3 tokenizer (byte-level BPE): encode the input when it is valid
 *                UTF-8 and check that decoding the ids gives the input back, byte for byte
 * A parser may refuse its input; it must not crash, leak, read out of bounds or hang. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapter.h"
#include "ckpt.h"
#include "job.h"
#include "model.h"
#include "safetensors.h"
#include "shard.h"
#include "tok.h"
#include "tok_int.h"
#include "torchbin.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#if defined(FUZZ_ADAPTERCFG)
#include <unistd.h>
static struct lb_model model;
static char adir[64];
static void adir_rm(void)
{
    char p[128];
    snprintf(p, sizeof p, "%s/adapter_config.json", adir);
    unlink(p);
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", adir);
    unlink(p);
    rmdir(adir);
}
#endif

#if defined(FUZZ_TOKENIZE)
static struct lb_tok *tok;
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct lb_err err = {0};
#if defined(FUZZ_SAFETENSORS)
    struct lb_st_file f;
    memset(&f, 0, sizeof f);
    lb_st_parse(&f, data, size, &err);
    lb_st_free(&f);
#elif defined(FUZZ_TORCHBIN)
    struct lb_st_file f;
    memset(&f, 0, sizeof f);
    lb_torchbin_parse(&f, data, size, &err);
    lb_st_free(&f);
#elif defined(FUZZ_CONFIG)
    struct lb_model_config cfg;
    memset(&cfg, 0, sizeof cfg);
    if (lb_model_config_parse(&cfg, (const char *)data, size, "config.json", &err) == 0)
        lb_model_genconfig_parse(&cfg, (const char *)data, size, "generation_config.json", &err);
#elif defined(FUZZ_JOB)
    struct lb_job job;
    lb_job_init(&job);
    lb_job_parse(&job, (const char *)data, size, "fuzz.yaml", "/nonexistent", &err);
    lb_job_free(&job);
#elif defined(FUZZ_RECORD)
    struct lb_gen_param def = {.max_tokens = 16, .temperature = 0.5f, .top_p = 1.0f, .top_k = 0, .seed = 1};
    struct lb_record r;
    lb_record_init(&r);
    lb_record_parse(&r, 3, (const char *)data, size, &def, &err);
    lb_record_free(&r);
#elif defined(FUZZ_CKPT)
    /* inputs that start with the magic get a correct length and CRC, so the fields behind the
     * CRC are reached (a fuzzer cannot guess a CRC); the rest exercise the outer checks */
    unsigned char *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    if (size >= 20 && !memcmp(buf, "LBCKPT\r\n", 8)) {
        uint32_t total = (uint32_t)size, crc;
        memcpy(buf + 12, &total, 4);
        crc = lb_crc32(0, buf, size - 4);
        memcpy(buf + size - 4, &crc, 4);
    }
    struct lb_ckpt c;
    lb_ckpt_init(&c);
    lb_ckpt_parse(&c, buf, size, &err);
    lb_ckpt_free(&c);
    free(buf);
#elif defined(FUZZ_ADAPTERCFG)
    if (!adir[0]) {
        const char *fix = getenv("LB_FUZZ_FIXTURE"); /* tests/golden/fixtures/llama3 */
        char p[1024];
        snprintf(adir, sizeof adir, "/tmp/lbfuzz.XXXXXX");
        snprintf(p, sizeof p, "%s/model", fix ? fix : "");
        if (!fix || !mkdtemp(adir) || lb_model_open(&model, p, &err)) {
            fprintf(stderr, "fuzz_adaptercfg: set LB_FUZZ_FIXTURE to the llama3 fixture folder (%s)\n", err.msg);
            abort();
        }
        snprintf(p, sizeof p, "%s/adapters/all7_r8/adapter_model.safetensors", fix);
        char l[128];
        snprintf(l, sizeof l, "%s/adapter_model.safetensors", adir);
        if (symlink(p, l)) abort();
        atexit(adir_rm);
    }
    char cfg[128];
    snprintf(cfg, sizeof cfg, "%s/adapter_config.json", adir);
    FILE *f = fopen(cfg, "wb");
    if (!f) abort();
    fwrite(data, 1, size, f);
    fclose(f);
    struct lb_adapter a;
    memset(&a, 0, sizeof a);
    if (lb_adapter_open(&a, "fuzz", adir, &model, &err) == 0) lb_adapter_free(&a);
#elif defined(FUZZ_TOKJSON)
    struct lb_tok *t = NULL;
    if (lb_tok_load_buf(&t, (const char *)data, size, NULL, 0, &err) == 0) {
        static const char text[] = "Hello, wörld! 12345 \xe4\xbd\xa0\xe5\xa5\xbd  tabs\tand\nlines <|end|>";
        struct lb_tok_ids ids = {0};
        struct lb_tok_text out = {0};
        if (lb_tok_encode(t, text, sizeof text - 1, LB_TOK_ADD_SPECIAL, &ids, &err) == 0)
            lb_tok_decode(t, ids.ids, ids.n, 0, &out, &err);
        lb_tok_ids_free(&ids);
        lb_tok_text_free(&out);
    }
    lb_tok_free(t);
#elif defined(FUZZ_TOKENIZE)
    if (!tok) {
        const char *dir = getenv("LB_FUZZ_TOKENIZER");
        if (!dir || lb_tok_open(&tok, dir, &err)) {
            fprintf(stderr, "fuzz_tokenize: set LB_FUZZ_TOKENIZER to a byte-level BPE tokenizer folder (%s)\n", err.msg);
            abort();
        }
    }
    if (tok_utf8_check(data, size) != size) return 0; /* the record parser refuses invalid UTF-8 before this */
    struct lb_tok_ids ids = {0};
    struct lb_tok_text out = {0};
    if (lb_tok_encode(tok, (const char *)data, size, 0, &ids, &err) == 0 &&
        lb_tok_decode(tok, ids.ids, ids.n, 0, &out, &err) == 0) {
        if (out.n != size || memcmp(out.s, data, size)) {
            fprintf(stderr, "fuzz_tokenize: decode(encode(x)) != x (%zu bytes in, %zu out)\n", size, out.n);
            abort();
        }
    } else {
        fprintf(stderr, "fuzz_tokenize: valid UTF-8 refused: %s\n", err.msg);
        abort();
    }
    lb_tok_ids_free(&ids);
    lb_tok_text_free(&out);
#else
#error "define one FUZZ_<TARGET>"
#endif
    return 0;
}
