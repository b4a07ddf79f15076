/* gen_random_c.c — write a random-weight Llama-3.2-1B-shaped checkpoint (bf16, HF layout)
 * without Python, for CPU benchmarks on machines with no torch. Deterministic (xorshift).
 * usage: gen_random_c OUT_DIR [llama-3.2-1b|tiny]
 * The GPU-side generator with every real shape and adapters is bench/gen_random_model.py. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static uint64_t s = 88172645463325252ull;
static uint16_t rnd_bf16(float std, float mean)
{
    /* sum of 4 uniforms ~ normal enough for a benchmark */
    float u = 0;
    for (int i = 0; i < 4; i++) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; u += (float)(s >> 40) / 16777216.0f; }
    float v = mean + std * (u - 2.0f) * 1.7320508f;
    uint32_t b;
    memcpy(&b, &v, 4);
    return (uint16_t)((b + 0x7fff + ((b >> 16) & 1)) >> 16);
}

struct t { char name[128]; long long d0, d1; float std, mean; };

int main(int argc, char **argv)
{
    if (argc < 2) { fprintf(stderr, "usage: %s OUT_DIR [llama-3.2-1b|tiny]\n", argv[0]); return 2; }
    const char *shape = argc > 2 ? argv[2] : "llama-3.2-1b";
    int H = 2048, L = 16, NH = 32, NKV = 8, D = 64, F = 8192, V = 128256;
    if (!strcmp(shape, "tiny")) { H = 256; L = 4; NH = 8; NKV = 4; D = 32; F = 768; V = 4096; }
    mkdir(argv[1], 0755);
    char p[1024];
    snprintf(p, sizeof p, "%s/config.json", argv[1]);
    FILE *f = fopen(p, "w");
    if (!f) { perror(p); return 1; }
    fprintf(f, "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":%d,\"num_hidden_layers\":%d,\"num_attention_heads\":%d,"
               "\"num_key_value_heads\":%d,\"head_dim\":%d,\"intermediate_size\":%d,\"vocab_size\":%d,\"max_position_embeddings\":131072,"
               "\"rms_norm_eps\":1e-5,\"rope_theta\":500000.0,\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":32.0,\"low_freq_factor\":1.0,"
               "\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192},\"tie_word_embeddings\":true,\"hidden_act\":\"silu\","
               "\"torch_dtype\":\"bfloat16\",\"bos_token_id\":128000,\"eos_token_id\":[128001,128008,128009]}\n", H, L, NH, NKV, D, F, V);
    fclose(f);
    int n = 0;
    struct t *ts = calloc((size_t)(2 + L * 9), sizeof *ts);
    ts[n++] = (struct t){"model.embed_tokens.weight", V, H, 0.02f, 0};
    ts[n++] = (struct t){"model.norm.weight", H, 0, 0.05f, 1};
    for (int l = 0; l < L; l++) {
        const char *nm[9] = {"input_layernorm", "post_attention_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                             "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
        long long d0[9] = {H, H, NH * D, NKV * D, NKV * D, H, F, F, H}, d1[9] = {0, 0, H, H, H, NH * D, H, H, F};
        for (int i = 0; i < 9; i++) {
            struct t *x = &ts[n++];
            snprintf(x->name, sizeof x->name, "model.layers.%d.%s.weight", l, nm[i]);
            x->d0 = d0[i]; x->d1 = d1[i]; x->std = i < 2 ? 0.05f : 0.02f; x->mean = i < 2 ? 1.0f : 0.0f;
        }
    }
    char *hdr = malloc(1 << 20);
    int hp = sprintf(hdr, "{");
    unsigned long long off = 0;
    for (int i = 0; i < n; i++) {
        long long ne = ts[i].d0 * (ts[i].d1 ? ts[i].d1 : 1);
        if (ts[i].d1) hp += sprintf(hdr + hp, "%s\"%s\":{\"dtype\":\"BF16\",\"shape\":[%lld,%lld],\"data_offsets\":[%llu,%llu]}", i ? "," : "", ts[i].name, ts[i].d0, ts[i].d1, off, off + 2 * ne);
        else hp += sprintf(hdr + hp, "%s\"%s\":{\"dtype\":\"BF16\",\"shape\":[%lld],\"data_offsets\":[%llu,%llu]}", i ? "," : "", ts[i].name, ts[i].d0, off, off + 2 * ne);
        off += 2ull * (unsigned long long)ne;
    }
    hp += sprintf(hdr + hp, "}");
    while (hp % 8) hdr[hp++] = ' ';
    snprintf(p, sizeof p, "%s/model.safetensors", argv[1]);
    f = fopen(p, "wb");
    if (!f) { perror(p); return 1; }
    uint64_t hl = (uint64_t)hp;
    fwrite(&hl, 8, 1, f);
    fwrite(hdr, 1, (size_t)hp, f);
    uint16_t *buf = malloc(2 << 20);
    for (int i = 0; i < n; i++) {
        long long ne = ts[i].d0 * (ts[i].d1 ? ts[i].d1 : 1);
        while (ne > 0) {
            long long c = ne < (1 << 20) ? ne : (1 << 20);
            for (long long k = 0; k < c; k++) buf[k] = rnd_bf16(ts[i].std, ts[i].mean);
            fwrite(buf, 2, (size_t)c, f);
            ne -= c;
        }
    }
    fclose(f);
    printf("wrote %s (%s, %.2f GB)\n", argv[1], shape, (double)off / 1e9);
    free(buf); free(hdr); free(ts);
    return 0;
}
