/* test_job.c — job file parsing (good file, defaults, catalogue of bad files with line
 * numbers), resolving against a folder tree (globs, adapters, units), fingerprint and diff. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "job.h"
#include "t.h"

static char root[512];

static void put(const char *rel, const char *text)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    /* make parent folders */
    for (char *s = p + strlen(root) + 1; (s = strchr(s, '/')); s++) {
        *s = 0;
        mkdir(p, 0755);
        *s = '/';
    }
    FILE *f = fopen(p, "wb");
    if (!f) {
        perror(p);
        return;
    }
    fputs(text, f);
    fclose(f);
}

static void make_tree(void)
{
    const char *base = getenv("LB_TEST_OUT");
    snprintf(root, sizeof root, "%s/job.XXXXXX", base && base[0] ? base : "/tmp");
    if (!mkdtemp(root)) {
        snprintf(root, sizeof root, "/tmp/job.XXXXXX");
        if (!mkdtemp(root)) perror("mkdtemp");
    }
    put("models/tiny/config.json", "{}");
    put("loras/sql/adapter_config.json", "{}");
    put("loras/chat/adapter_config.json", "{}");
    put("loras/notes/readme.txt", "not an adapter");
    put("loras/.hidden/adapter_config.json", "{}");
    put("loras/base/adapter_config.json.bak", "no config: ignored, so the reserved name does not matter");
    put("extra/legal/adapter_config.json", "{}");
    put("extra/empty/readme.txt", "");
    put("data/sql-1.jsonl.zst", "");
    put("data/sql-2.jsonl.zst", "");
    put("data/eval.jsonl", "{\"prompt\":\"x\"}\n");
    put("data/other.txt", "");
    put("data2/eval.jsonl", "");
}

static const char good_yaml[] =
    "# the DESIGN.md example, on the test tree\n"
    "model: models/tiny\n"
    "adapters:\n"
    "  dir: loras/\n"
    "  map: {legal: extra/legal}\n"
    "inputs:\n"
    "  - path: data/sql-*.jsonl.zst\n"
    "    adapter: sql\n"
    "  - path: data/eval.jsonl\n"
    "    adapters: [sql, chat, base]\n"
    "  - path: data/eval.jsonl\n"
    "    adapter: legal\n"
    "output:\n"
    "  dir: out/run-17\n"
    "  zstd_level: 5\n"
    "  token_ids: true\n"
    "generation:\n"
    "  max_tokens: 100\n"
    "  temperature: 0.7\n"
    "  top_p: 0.95\n"
    "  top_k: 40\n"
    "  seed: 18446744073709551615\n"
    "  stop: [\"###\", \"\\n\\n\"]\n"
    "resources:\n"
    "  device: cpu\n"
    "  tensor_parallel: 2\n"
    "  gpu_adapter_slots: 4\n"
    "  host_adapter_cache: 16\n"
    "  max_lora_rank: 32\n"
    "  max_seqs: 64\n"
    "  max_batch_tokens: 4096\n"
    "  gpu_memory_fraction: 0.5\n"
    "  max_error_rate: 0.1\n"
    "checkpoint:\n"
    "  interval_s: 5\n";

static int parse(struct lb_job *job, const char *yaml, struct lb_err *err)
{
    lb_job_init(job);
    return lb_job_parse(job, yaml, strlen(yaml), "job.yaml", root, err);
}

static void test_good(void)
{
    struct lb_job job;
    struct lb_err err = {0};
    char want[1024];
    T_CHECK(parse(&job, good_yaml, &err) == 0, "%s", err.msg);
    snprintf(want, sizeof want, "%s/models/tiny", root);
    T_CHECK(job.model_dir && !strcmp(job.model_dir, want), "model %s", job.model_dir);
    snprintf(want, sizeof want, "%s/loras", root);
    T_CHECK(job.adapters_dir && !strcmp(job.adapters_dir, want), "adapters.dir %s", job.adapters_dir);
    T_CHECK(job.n_map == 1 && !strcmp(job.map[0].name, "legal") && job.map[0].line == 5, "map");
    T_CHECK(job.n_input == 3 && job.inputs[1].n_adapter == 3 && !strcmp(job.inputs[1].adapters[2], "base") &&
                job.inputs[0].line == 7 && job.inputs[1].line == 9,
            "inputs");
    snprintf(want, sizeof want, "%s/out/run-17", root);
    T_CHECK(job.out_dir && !strcmp(job.out_dir, want), "out %s", job.out_dir);
    T_CHECK(job.zstd_level == 5 && job.token_ids == 1, "output");
    T_CHECK(job.gen.max_tokens == 100 && job.gen.temperature == 0.7f && job.gen.top_p == 0.95f && job.gen.top_k == 40 &&
                job.gen.seed == UINT64_MAX && job.gen.n_stop == 2 && !strcmp(job.gen.stop[0], "###") &&
                !strcmp(job.gen.stop[1], "\n\n"),
            "generation");
    T_CHECK(job.device == LB_DEVICE_CPU && job.tensor_parallel == 2 && job.gpu_adapter_slots == 4 &&
                job.host_adapter_cache == 16 && job.max_lora_rank == 32 && job.max_seqs == 64 &&
                job.max_batch_tokens == 4096 && job.gpu_memory_fraction == 0.5 && job.max_error_rate == 0.1 &&
                job.checkpoint_interval_s == 5,
            "resources/checkpoint");

    T_CHECK(lb_job_resolve(&job, &err) == 0, "%s", err.msg);
    T_CHECK(job.n_adapter == 3 && !strcmp(job.adapters[0].name, "chat") && !strcmp(job.adapters[1].name, "legal") &&
                !strcmp(job.adapters[2].name, "sql"),
            "adapters: %d", job.n_adapter);
    snprintf(want, sizeof want, "%s/loras/sql", root);
    T_CHECK(job.n_adapter == 3 && !strcmp(job.adapters[2].dir, want), "sql dir %s", job.adapters[2].dir);
    static const char *names[] = {"sql-1.sql.jsonl.zst", "sql-2.sql.jsonl.zst", "eval.sql.jsonl.zst",
                                  "eval.chat.jsonl.zst", "eval.base.jsonl.zst", "eval.legal.jsonl.zst"};
    static const char *ad[] = {"sql", "sql", "sql", "chat", "base", "legal"};
    T_CHECK(job.n_unit == 6, "units %d", job.n_unit);
    for (int i = 0; i < job.n_unit && i < 6; i++) {
        const struct lb_job_unit *u = &job.units[i];
        T_CHECK(!strcmp(u->out_name, names[i]) && !strcmp(u->adapter_name, ad[i]), "unit %d: %s %s", i, u->out_name,
                u->adapter_name);
        T_CHECK(u->adapter == lb_job_find_adapter(&job, ad[i]), "unit %d adapter index", i);
    }
    T_CHECK(job.n_shard == 3 && job.shards[0].zst && !job.shards[2].zst && !strcmp(job.shards[2].stem, "eval") &&
                !strcmp(job.shards[1].stem, "sql-2"),
            "shards");
    T_CHECK(lb_job_find_adapter(&job, "base") == -1 && lb_job_find_adapter(&job, "nope") == -2, "find");
    lb_job_free(&job);
}

static void test_defaults(void)
{
    struct lb_job job;
    struct lb_err err = {0};
    const char *y = "model: /abs/m\ninputs:\n  - path: data/eval.jsonl\noutput: {dir: out}\n";
    T_CHECK(parse(&job, y, &err) == 0, "%s", err.msg);
    T_CHECK(!strcmp(job.model_dir, "/abs/m"), "absolute path kept");
    T_CHECK(job.zstd_level == 3 && job.token_ids == 0, "output defaults");
    T_CHECK(job.gen.max_tokens == 256 && job.gen.temperature == 0 && job.gen.top_p == 1 && job.gen.top_k == 0 &&
                job.gen.seed == 0 && job.gen.n_stop == 0 && job.gen.ignore_eos == 0,
            "generation defaults");
    T_CHECK(job.device == LB_DEVICE_AUTO && job.tensor_parallel == 1 && job.gpu_adapter_slots == 8 &&
                job.host_adapter_cache == 64 && job.max_lora_rank == 64 && job.max_seqs == 256 &&
                job.max_batch_tokens == 8192 && job.gpu_memory_fraction == 0.90 && job.max_error_rate == 0.5 &&
                job.error_rate_min_records == 100 && job.checkpoint_interval_s == 30,
            "resource defaults");
    T_CHECK(job.inputs[0].n_adapter == 1 && !strcmp(job.inputs[0].adapters[0], "base"), "no adapter = base");
    lb_job_free(&job);
    /* null adapter and null adapters section */
    y = "model: m\nadapters:\ninputs:\n  - {path: data/eval.jsonl, adapter: null}\n  - {path: data/eval.jsonl, "
        "adapter: ~}\noutput: {dir: out}\n";
    T_CHECK(parse(&job, y, &err) == 0, "%s", err.msg);
    T_CHECK(!strcmp(job.inputs[0].adapters[0], "base") && !strcmp(job.inputs[1].adapters[0], "base"), "null = base");
    /* the same shard twice with the same adapter: one output file, refused */
    T_CHECK(lb_job_resolve(&job, &err) == LB_E_INPUT && strstr(err.msg, "job.yaml:5: field \"inputs[1].path\"") &&
                strstr(err.msg, "listed twice"),
            "%s", err.msg);
    lb_job_free(&job);
}

/* ------------------------------------------------------------------ bad files */

struct bad_case {
    const char *yaml;
    int n_err;               /* expected number of messages */
    const char *want[4];     /* each "LINE|substring" must appear in some message */
};

#define BASE "model: m\ninputs:\n  - path: d.jsonl\noutput:\n  dir: o\n" /* 5 lines */

static const struct bad_case bad_cases[] = {
    {"modle: m\ninputs: [{path: d.jsonl}]\noutput: {dir: o}\n", 2,
     {"1|field \"modle\": unknown key (known: model, adapters,", "1|field \"model\": missing"}},
    {BASE "generation:\n  top_p: 1.5\n", 1, {"7|field \"generation.top_p\": must be in (0, 1], got 1.5"}},
    {BASE "generation:\n  temperature: \"0.7\"\n", 1, {"7|field \"generation.temperature\": expected a number"}},
    {BASE "generation:\n  temperature: -1\n", 1, {"7|field \"generation.temperature\": must be in [0,"}},
    {BASE "generation:\n  max_tokens: 0\n", 1, {"7|field \"generation.max_tokens\": must be in [1,"}},
    {BASE "generation:\n  max_tokens: 1.5\n", 1, {"7|generation.max_tokens\": expected an integer, got \"1.5\""}},
    {BASE "generation:\n  top_k: -1\n", 1, {"7|generation.top_k\": must be in [0,"}},
    {BASE "generation:\n  seed: -1\n", 1, {"7|generation.seed\": expected an integer in [0, 2^64)"}},
    {BASE "generation:\n  seed: 18446744073709551616\n", 1, {"7|generation.seed\""}},
    {BASE "generation:\n  stop: [\"a\", \"\"]\n", 1, {"7|generation.stop[1]\": must not be empty"}},
    {BASE "generation:\n  stop: {a: 1}\n", 1, {"7|generation.stop\": expected a string or a list"}},
    {BASE "generation:\n  temprature: 0.5\n", 1, {"7|field \"generation.temprature\": unknown key"}},
    {BASE "generation: 5\n", 1, {"6|field \"generation\": expected a mapping, got a scalar"}},
    {"model: m\ninputs:\n  - path: d.jsonl\noutput:\n  dir: o\n  zstd_level: 30\n  token_ids: yes\n", 2,
     {"6|output.zstd_level\": must be in [1, 19], got 30", "7|output.token_ids\": expected true or false, got \"yes\""}},
    {BASE "resources:\n  device: gpu\n  gpu_memory_fraction: 0\n  max_error_rate: 2\n  tensor_parallel: 0\n", 4,
     {"7|resources.device\": expected auto, cpu or cuda, got \"gpu\"", "8|resources.gpu_memory_fraction\": must be in (0, 1]",
      "9|resources.max_error_rate\": must be in [0, 1]", "10|resources.tensor_parallel\": must be in [1,"}},
    {BASE "checkpoint:\n  interval_s: 0\n", 1, {"7|checkpoint.interval_s\": must be in (0,"}},
    {BASE "checkpoint:\n  every: 10\n", 1, {"7|checkpoint.every\": unknown key"}},
    {"model: m\ninputs: d.jsonl\noutput: {dir: o}\n", 1, {"2|field \"inputs\": expected a list of inputs"}},
    {"model: m\ninputs: []\noutput: {dir: o}\n", 1, {"2|field \"inputs\": empty list"}},
    {"model: m\ninputs:\n  - adapter: sql\noutput: {dir: o}\n", 1, {"3|field \"inputs[0].path\": missing"}},
    {"model: m\ninputs:\n  - path: d.jsonl\n    adapter: sql\n    adapters: [chat]\noutput: {dir: o}\n", 1,
     {"5|field \"inputs[0].adapters\": give either \"adapter\" or \"adapters\", not both"}},
    {"model: m\ninputs:\n  - path: d.jsonl\n    adapters: []\noutput: {dir: o}\n", 1,
     {"4|inputs[0].adapters\": empty list"}},
    {"model: m\ninputs:\n  - path: d.jsonl\n    adapters: [sql, chat, sql]\noutput: {dir: o}\n", 1,
     {"4|inputs[0].adapters[2]\": adapter \"sql\" listed twice"}},
    {"model: m\ninputs:\n  - path: d.jsonl\n    adapter: ../x\noutput: {dir: o}\n", 1,
     {"4|inputs[0].adapter\": bad adapter name \"../x\""}},
    {"model: m\ninputs:\n  - path: d.jsonl\n    colour: red\noutput: {dir: o}\n", 1,
     {"4|inputs[0].colour\": unknown key (known: path, adapter, adapters)"}},
    {BASE "adapters:\n  map: {base: x, ok: [1]}\n", 2,
     {"7|adapters.map.base\": bad adapter name", "7|adapters.map.ok\": expected a string, got a list"}},
    {BASE "adapters:\n  folder: x\n", 1, {"7|adapters.folder\": unknown key"}},
    {"model: [unclosed\n", 1, {"2|YAML syntax error"}},
    {"", 1, {"1|empty job file"}},
    {BASE "---\nmodel: n\n", 1, {"7|more than one YAML document"}},
    {BASE "model: again\n", 1, {"6|field \"model\": repeated key"}},
    {"model: m\ninputs:\n  - path: d.jsonl\noutput:\n  zstd_level: 3\n", 1, {"5|field \"output.dir\": missing"}},
    {"- a\n- b\n", 1, {"1|expected a mapping, got a list"}},
    {"model: \"\"\ninputs:\n  - path: d.jsonl\noutput: {dir: o}\n", 1, {"1|field \"model\": must not be empty"}},
    {"model: ~\ninputs:\n  - path: d.jsonl\noutput: {dir: o}\n", 1, {"1|field \"model\": expected a string, got null"}},
    /* many problems at once: every one is reported, each on its own line */
    {"model: m\nmodle: m\ninputs:\n  - path: d.jsonl\n    adapter: a b\noutput:\n  dir: o\n  zstd_level: 0\n"
     "generation:\n  top_p: 0\n  top_k: x\nresources:\n  max_seqs: 0\n",
     6,
     {"2|modle", "5|inputs[0].adapter", "10|generation.top_p", "13|resources.max_seqs"}},
};

static void test_bad_catalogue(void)
{
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const struct bad_case *k = &bad_cases[i];
        struct lb_job job;
        struct lb_err err = {0};
        int rc = parse(&job, k->yaml, &err);
        T_CHECK(rc == LB_E_INPUT, "case %zu: rc %d", i, rc);
        T_CHECK(job.n_diag == k->n_err, "case %zu: %d messages, want %d:\n%s", i, job.n_diag, k->n_err, err.msg);
        for (int w = 0; w < 4 && k->want[w]; w++) {
            const char *bar = strchr(k->want[w], '|');
            char head[64];
            snprintf(head, sizeof head, "job.yaml:%.*s: ", (int)(bar - k->want[w]), k->want[w]);
            int hit = 0;
            for (int d = 0; d < job.n_diag; d++)
                if (!strncmp(job.diag[d], head, strlen(head)) && strstr(job.diag[d], bar + 1)) hit = 1;
            T_CHECK(hit, "case %zu: no message \"%s...%s\" in:\n%s", i, head, bar + 1, err.msg);
            T_CHECK(strstr(err.msg, bar + 1), "case %zu: err.msg lacks %s", i, bar + 1);
        }
        lb_job_free(&job);
    }
}

static void test_resolve_errors(void)
{
    struct lb_job job;
    struct lb_err err = {0};
    /* several file-system problems at once */
    const char *y = "model: models/missing\n"                       /* 1 */
                    "adapters:\n"                                   /* 2 */
                    "  map:\n"                                      /* 3 */
                    "    legal: extra/legal\n"                      /* 4 */
                    "inputs:\n"                                     /* 5 */
                    "  - path: data/nope-*.jsonl\n"                 /* 6 */
                    "  - path: data/other.txt\n"                    /* 7 */
                    "  - path: data/eval.jsonl\n"                   /* 8 */
                    "    adapter: legal\n"                          /* 9 */
                    "  - path: data2/eval.jsonl\n"                  /* 10 */
                    "    adapter: legal\n"                          /* 11 */
                    "  - path: data/sql-[12].jsonl.zst\n"           /* 12 */
                    "    adapters: [base]\n"                        /* 13 */
                    "output: {dir: out}\n";
    T_CHECK(parse(&job, y, &err) == 0, "%s", err.msg);
    int rc = lb_job_resolve(&job, &err);
    T_CHECK(rc == LB_E_INPUT, "rc %d", rc);
    const char *want[] = {"job.yaml:1: field \"model\": ",      "models/missing: not a folder",
                          "job.yaml:6: field \"inputs[0].path\": ", "nope-*.jsonl matches no file",
                          "job.yaml:7: field \"inputs[1].path\": ", "other.txt: a shard must end in .jsonl or .jsonl.zst",
                          "job.yaml:10: field \"inputs[3].path\": ", "would both write eval.legal.jsonl.zst"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        T_CHECK(strstr(err.msg, want[i]), "missing \"%s\" in:\n%s", want[i], err.msg);
    T_CHECK(job.n_diag == 4, "%d messages:\n%s", job.n_diag, err.msg);
    T_CHECK(job.n_unit == 0 && job.units == NULL, "units left after a failed resolve");
    lb_job_free(&job);

    /* adapter problems */
    y = "model: models/tiny\n"
        "adapters:\n"
        "  dir: loras\n"
        "  map:\n"
        "    sql: extra/legal\n"  /* 5: sql also comes from loras/ */
        "    gone: extra/none\n"  /* 6 */
        "    empty: extra/empty\n" /* 7 */
        "inputs:\n"
        "  - path: data/eval.jsonl\n"
        "    adapter: chat\n"
        "output: {dir: out}\n";
    T_CHECK(parse(&job, y, &err) == 0, "%s", err.msg);
    rc = lb_job_resolve(&job, &err);
    T_CHECK(rc == LB_E_INPUT && job.n_diag == 3, "rc %d, %d messages:\n%s", rc, job.n_diag, err.msg);
    T_CHECK(strstr(err.msg, "job.yaml:5: field \"adapters\": adapter \"sql\" defined twice"), "%s", err.msg);
    T_CHECK(strstr(err.msg, "job.yaml:6: field \"adapters.map.gone\": ") && strstr(err.msg, "extra/none: not a folder"),
            "%s", err.msg);
    T_CHECK(strstr(err.msg, "job.yaml:7: field \"adapters.map.empty\": ") &&
                strstr(err.msg, "no adapter_config.json in this folder"),
            "%s", err.msg);
    lb_job_free(&job);

    /* unknown adapters, named with the known ones */
    y = "model: models/gone\nadapters: {dir: loras}\ninputs:\n  - path: data/eval.jsonl\n    adapters: [chat, sqll]\n"
        "  - path: data/sql-1.jsonl.zst\n    adapter: legal\noutput: {dir: out}\n";
    T_CHECK(parse(&job, y, &err) == 0, "%s", err.msg);
    rc = lb_job_resolve(&job, &err);
    T_CHECK(strstr(err.msg, "job.yaml:1: field \"model\""), "missing model not reported: %s", err.msg);
    T_CHECK(rc == LB_E_INPUT && job.n_diag == 3, "rc %d, %d messages:\n%s", rc, job.n_diag, err.msg);
    T_CHECK(strstr(err.msg, "job.yaml:5: field \"inputs[0].adapters\": unknown adapter \"sqll\" (known: chat, sql, base)"),
            "%s", err.msg);
    T_CHECK(strstr(err.msg, "job.yaml:7: field \"inputs[1].adapter\": unknown adapter \"legal\""), "%s", err.msg);
    lb_job_free(&job);

    y = "model: models/tiny\nadapters: {dir: nowhere}\ninputs:\n  - path: data/eval.jsonl\noutput: {dir: out}\n";
    T_CHECK(parse(&job, y, &err) == 0, "%s", err.msg);
    rc = lb_job_resolve(&job, &err);
    T_CHECK(rc == LB_E_INPUT && strstr(err.msg, "job.yaml:2: field \"adapters.dir\": cannot open folder"), "%s",
            err.msg);
    lb_job_free(&job);
}

static void test_load_file(void)
{
    put("jobs/j.yaml", "model: ../models/tiny\ninputs:\n  - path: ../data/eval.jsonl\noutput: {dir: ../out}\n");
    char p[1024], want[2048];
    snprintf(p, sizeof p, "%s/jobs/j.yaml", root);
    struct lb_job job;
    struct lb_err err = {0};
    lb_job_init(&job);
    T_CHECK(lb_job_load(&job, p, &err) == 0, "%s", err.msg);
    char *real = realpath(root, NULL);
    snprintf(want, sizeof want, "%s/jobs/../models/tiny", real ? real : root);
    T_CHECK(job.model_dir && !strcmp(job.model_dir, want), "model %s, want %s", job.model_dir, want);
    T_CHECK(lb_job_resolve(&job, &err) == 0 && job.n_unit == 1 && !strcmp(job.units[0].out_name, "eval.base.jsonl.zst"),
            "%s", err.msg);
    lb_job_free(&job);
    free(real);
    put("jobs/bad.yaml", "model: m\ninputs:\n  - path: x.jsonl\noutput: {dir: o}\ngeneration: {top_k: many}\n");
    snprintf(p, sizeof p, "%s/jobs/bad.yaml", root);
    lb_job_init(&job);
    int rc = lb_job_load(&job, p, &err);
    snprintf(want, sizeof want, "%s:5: field \"generation.top_k\": expected an integer", p);
    T_CHECK(rc == LB_E_INPUT && strstr(err.msg, want), "message names the file: %s", err.msg);
    lb_job_free(&job);
    lb_job_init(&job);
    rc = lb_job_load(&job, "/nonexistent/job.yaml", &err);
    T_CHECK(rc == LB_E_IO && strstr(err.msg, "/nonexistent/job.yaml"), "%s", err.msg);
    lb_job_free(&job);
}

/* ------------------------------------------------------------------ fingerprint */

static int canon_of(const char *yaml, char **c, size_t *n)
{
    struct lb_job job;
    struct lb_err err = {0};
    int rc = parse(&job, yaml, &err);
    if (!rc) rc = lb_job_resolve(&job, &err);
    if (!rc) rc = lb_job_canon(&job, c, n, &err);
    if (rc) fprintf(stderr, "  canon_of: %s\n", err.msg);
    lb_job_free(&job);
    return rc;
}

static char *replace(const char *s, const char *a, const char *b)
{
    const char *p = strstr(s, a);
    if (!p) return NULL;
    char *r = malloc(strlen(s) + strlen(b) + 1);
    sprintf(r, "%.*s%s%s", (int)(p - s), s, b, p + strlen(a));
    return r;
}

static void test_fingerprint(void)
{
    char *c0, *c1;
    size_t n0, n1;
    char diff[4096];
    T_CHECK(canon_of(good_yaml, &c0, &n0) == 0, "canon");
    T_CHECK(canon_of(good_yaml, &c1, &n1) == 0, "canon again");
    T_CHECK(n0 == n1 && !memcmp(c0, c1, n0), "canonical text not stable");
    T_CHECK(lb_job_fingerprint(c0, n0) == lb_job_fingerprint(c1, n1), "fingerprint not stable");
    T_CHECK(lb_job_canon_diff(c0, n0, c1, n1, diff, sizeof diff) == 0 && diff[0] == 0, "identical: %s", diff);
    T_CHECK(strstr(c0, "generation.top_p=0.95\n") && strstr(c0, "generation.temperature=0.7\n"), "%s", c0);
    T_CHECK(strstr(c0, "output.token_ids=true\n") && strstr(c0, "generation.stop=[\"###\", \"\\n\\n\"]\n"), "%s", c0);
    free(c1);

    /* settings that do not change outputs keep the fingerprint */
    char *y = replace(good_yaml, "zstd_level: 5", "zstd_level: 9");
    char *y2 = replace(y, "max_seqs: 64", "max_seqs: 8");
    T_CHECK(canon_of(y2, &c1, &n1) == 0 && lb_job_fingerprint(c0, n0) == lb_job_fingerprint(c1, n1),
            "zstd_level/max_seqs changed the fingerprint");
    free(y);
    free(y2);
    free(c1);

    /* ignore_eos: off by default and then absent from the canonical text (checkpoints written
     * before the field existed still match); on: parsed and named in the diff */
    T_CHECK(!strstr(c0, "ignore_eos"), "ignore_eos in the canon while off: %s", c0);
    y = replace(good_yaml, "  top_k: 40\n", "  top_k: 40\n  ignore_eos: true\n");
    {
        struct lb_job jb;
        struct lb_err e2 = {0};
        T_CHECK(parse(&jb, y, &e2) == 0 && jb.gen.ignore_eos == 1, "ignore_eos: %s", e2.msg);
        lb_job_free(&jb);
    }
    T_CHECK(canon_of(y, &c1, &n1) == 0, "canon");
    int nd = lb_job_canon_diff(c0, n0, c1, n1, diff, sizeof diff);
    T_CHECK(nd == 1 && strstr(diff, "added generation.ignore_eos=true"), "%d: %s", nd, diff);
    free(y);
    free(c1);

    /* a changed generation parameter is named */
    y = replace(good_yaml, "top_p: 0.95", "top_p: 0.5");
    T_CHECK(canon_of(y, &c1, &n1) == 0, "canon");
    T_CHECK(lb_job_fingerprint(c0, n0) != lb_job_fingerprint(c1, n1), "top_p not in the fingerprint");
    nd = lb_job_canon_diff(c0, n0, c1, n1, diff, sizeof diff);
    T_CHECK(nd == 1 && !strcmp(diff, "changed generation.top_p: 0.95 -> 0.5"), "%d: %s", nd, diff);
    free(y);
    free(c1);

    /* the smallest change of a float is still a change */
    y = replace(good_yaml, "temperature: 0.7", "temperature: 0.70000005");
    T_CHECK(canon_of(y, &c1, &n1) == 0, "canon");
    nd = lb_job_canon_diff(c0, n0, c1, n1, diff, sizeof diff);
    T_CHECK(nd == 1 && strstr(diff, "changed generation.temperature: 0.7 -> 0.70000"), "%d: %s", nd, diff);
    free(y);
    free(c1);

    /* an adapter dropped from an input: its unit goes away */
    y = replace(good_yaml, "adapters: [sql, chat, base]", "adapters: [sql, base]");
    T_CHECK(canon_of(y, &c1, &n1) == 0, "canon");
    nd = lb_job_canon_diff(c0, n0, c1, n1, diff, sizeof diff);
    T_CHECK(nd == 2 && strstr(diff, "removed adapter.chat=") && strstr(diff, "removed unit.eval.chat.jsonl.zst="), "%d: %s",
            nd, diff);
    nd = lb_job_canon_diff(c1, n1, c0, n0, diff, sizeof diff);
    T_CHECK(nd == 2 && strstr(diff, "added unit.eval.chat.jsonl.zst="), "%d: %s", nd, diff);
    free(y);
    free(c1);

    /* model folder and token_ids */
    put("models/other/config.json", "{}");
    y = replace(good_yaml, "model: models/tiny", "model: models/other");
    y2 = replace(y, "token_ids: true", "token_ids: false");
    T_CHECK(canon_of(y2, &c1, &n1) == 0, "canon");
    nd = lb_job_canon_diff(c0, n0, c1, n1, diff, sizeof diff);
    T_CHECK(nd == 2 && strstr(diff, "changed model:") && strstr(diff, "models/other") &&
                strstr(diff, "changed output.token_ids: true -> false"),
            "%d: %s", nd, diff);
    free(y);
    free(y2);
    free(c1);

    /* a small buffer is cut, still terminated */
    char small[16];
    memset(small, 'x', sizeof small);
    y = replace(good_yaml, "top_k: 40", "top_k: 41");
    T_CHECK(canon_of(y, &c1, &n1) == 0, "canon");
    nd = lb_job_canon_diff(c0, n0, c1, n1, small, sizeof small);
    T_CHECK(nd == 1 && memchr(small, 0, sizeof small), "small buffer");
    free(y);
    free(c1);
    free(c0);
}

int main(void)
{
    make_tree();
    T_RUN(test_good);
    T_RUN(test_defaults);
    T_RUN(test_bad_catalogue);
    T_RUN(test_resolve_errors);
    T_RUN(test_load_file);
    T_RUN(test_fingerprint);
    return T_DONE();
}
