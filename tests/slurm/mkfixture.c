/* mkfixture.c — the Slurm test's inputs: a tiny random Llama model, three PEFT adapters
 * and JSONL shards of prompt_token_ids records (no tokenizer: text is "", token ids are
 * written). Deterministic.
 *   cc -O2 -Isrc -Itests/unit tests/slurm/mkfixture.c -lm -o mkfixture
 *   mkfixture DIR N_SHARDS RECORDS_PER_SHARD MAX_TOKENS */
#include "tmodel.h"

/* tmodel.h's writer references these; the fixture is written as F32, so they never run */
uint16_t lb_f32_to_bf16(float f) { (void)f; abort(); }
uint16_t lb_f32_to_f16(float f) { (void)f; abort(); }

int main(int argc, char **argv)
{
    if (argc != 5) { fprintf(stderr, "usage: mkfixture DIR N_SHARDS RECORDS_PER_SHARD MAX_TOKENS\n"); return 2; }
    const char *dir = argv[1];
    int n_shards = atoi(argv[2]), n_rec = atoi(argv[3]), max_tok = atoi(argv[4]);
    char p[400];
    mkdir(dir, 0755);
    /* big enough that a part runs for seconds on one core, so a test can interrupt it */
    struct tm_cfg c = {"LlamaForCausalLM", 128, 4, 8, 2, 16, 384, 1024, 0, 0, "F32"};
    snprintf(p, sizeof p, "%s/model", dir);
    if (tm_model(p, &c, 11)) return 1;
    snprintf(p, sizeof p, "%s/adapters", dir);
    mkdir(p, 0755);
    const char *all7[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    const char *qv[] = {"q_proj", "v_proj"};
    snprintf(p, sizeof p, "%s/adapters/sql", dir);
    if (tm_adapter(p, &c, 8, 16, all7, 7, 5)) return 1;
    snprintf(p, sizeof p, "%s/adapters/chat", dir);
    if (tm_adapter(p, &c, 4, 8, qv, 2, 6)) return 1;
    snprintf(p, sizeof p, "%s/adapters/poem", dir);
    if (tm_adapter(p, &c, 16, 16, all7, 7, 7)) return 1;
    snprintf(p, sizeof p, "%s/data", dir);
    mkdir(p, 0755);
    uint64_t r = 12345;
    for (int s = 0; s < n_shards; s++) {
        snprintf(p, sizeof p, "%s/data/shard-%02d.jsonl", dir, s);
        FILE *f = fopen(p, "w");
        if (!f) return 1;
        for (int i = 0; i < n_rec; i++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            int len = 4 + (int)((r >> 33) % 20);
            fprintf(f, "{\"id\":\"s%d-r%d\",\"prompt_token_ids\":[", s, i);
            for (int k = 0; k < len; k++) {
                r = r * 6364136223846793005ull + 1442695040888963407ull;
                fprintf(f, "%s%d", k ? "," : "", 3 + (int)((r >> 33) % 1000));
            }
            /* every 5th record samples (temperature 0.8, own seed); the rest are greedy */
            if (i % 5 == 4) fprintf(f, "],\"temperature\":0.8,\"seed\":%d,\"max_tokens\":%d}\n", i, max_tok);
            else fprintf(f, "],\"max_tokens\":%d}\n", max_tok);
        }
        fclose(f);
    }
    return 0;
}
