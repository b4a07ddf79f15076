#!/usr/bin/env python3
"""tok_gen.py — deterministic mixed text for the tokenizer benchmark.

    python3 bench/tok_gen.py MB > text.txt

Writes at least MB megabytes (10^6 bytes) of newline-separated documents: English-like
prose over a Zipf-distributed vocabulary (common words plus invented ones, so the word
cache sees a long tail), code, Chinese / Japanese / Korean, Cyrillic / Greek / Arabic /
Devanagari text, numbers and dates, URLs, emoji and whitespace runs. Uses its own xorshift
generator, so every Python version writes the same bytes.
"""
import sys

MB = float(sys.argv[1]) if len(sys.argv) > 1 else 50.0
TARGET = int(MB * 1e6)

state = 0x9E3779B97F4A7C15


def rnd(n):
    global state
    state ^= (state << 13) & 0xFFFFFFFFFFFFFFFF
    state ^= state >> 7
    state ^= (state << 17) & 0xFFFFFFFFFFFFFFFF
    return state % n


def zipf_index(n):
    # P(k) ~ 1/k roughly: pick a log-uniform value
    r = (rnd(1 << 30) + 1) / float(1 << 30)
    return min(n - 1, int(n ** r) - 1)


COMMON = ("the of and to a in is that for it as was with be by on not he I this are or his from at which but have an "
          "they you were her she there been one all we their has would when if so no will more can out up its said what "
          "about into than them only other new some could time these two may then do first any my now such like our "
          "over man me even most made after also did many before must through back years where much your way well down "
          "should because each just those people how too little state good very make world still own see men work long "
          "get here between both life being under never day same another know while last might us great old year off "
          "come since against go came right used take three model data token system learning language training").split()
SYL = ["ka", "ri", "to", "men", "sa", "lo", "tri", "an", "ver", "pol", "ex", "qu", "ing", "tion", "al", "er", "ic",
       "ous", "ble", "ment", "ness", "pre", "con", "dis", "un", "re", "st", "ph", "th", "sch", "ow", "ee", "ai", "oi"]
VOCAB = list(COMMON)
while len(VOCAB) < 60000:
    w = "".join(SYL[rnd(len(SYL))] for _ in range(1 + rnd(4)))
    VOCAB.append(w)

CJK = [chr(0x4E00 + rnd(0x51A5)) for _ in range(3000)]
KANA = [chr(c) for c in range(0x3041, 0x3097)] + [chr(c) for c in range(0x30A1, 0x30FB)]
HANGUL = [chr(0xAC00 + rnd(11172)) for _ in range(1500)]
CYR = "абвгдежзийклмнопрстуфхцчшщъыьэюя"
GRK = "αβγδεζηθικλμνξοπρστυφχψω"
ARA = "ابتثجحخدذرزسشصضطظعغفقكلمنهوي"
DEV = ["क", "ख", "ग", "न", "म", "र", "स", "त", "प", "ह", "ा", "ि", "ी", "ु", "े", "ो", "्", "ं"]
EMOJI = ["😀", "😂", "🙂", "👍", "👍🏽", "🎉", "🚀", "❤️", "🔥", "✅", "🤖", "👨\u200d💻", "🇫🇷", "✨"]
PUNCT = [".", ".", ".", ",", ",", ",", ";", ":", "!", "?", " -", " (", ")", "\"", "'"]
CONTR = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"]


def prose():
    out = []
    n = 20 + rnd(300)
    cap = True
    for i in range(n):
        w = VOCAB[zipf_index(len(VOCAB))]
        if cap:
            w = w[:1].upper() + w[1:]
            cap = False
        r = rnd(100)
        if r < 3:
            w += CONTR[rnd(len(CONTR))]
        elif r < 5:
            w = str(rnd(10 ** (1 + rnd(6))))
        out.append(w)
        r = rnd(100)
        if r < 12:
            p = PUNCT[rnd(len(PUNCT))]
            out.append(p)
            if p in ".!?":
                cap = True
        out.append(" ")
    return "".join(out).strip()


def code():
    lines = []
    for _ in range(3 + rnd(25)):
        ind = "    " * rnd(4)
        a, b, c = (VOCAB[zipf_index(len(VOCAB))] for _ in range(3))
        k = rnd(6)
        if k == 0:
            lines.append(f"{ind}def {a}_{b}(self, {c}, *args, **kwargs):")
        elif k == 1:
            lines.append(f"{ind}for (int {a[:1]} = 0; {a[:1]} < {rnd(1000)}; ++{a[:1]}) {{ {b}[{a[:1]}] += {c}; }}")
        elif k == 2:
            lines.append(f"{ind}if {a} is not None and len({b}) > {rnd(100)}:  # {c}")
        elif k == 3:
            lines.append(f'{ind}const {a} = await fetch("https://{b}.example.com/{c}?id={rnd(99999)}");')
        elif k == 4:
            lines.append(f"{ind}return {{'{a}': {b}, \"{c}\": [{rnd(9)}, {rnd(99)}, {rnd(999)}]}}")
        else:
            lines.append(f"{ind}{a}.{b}({c}, {rnd(10)}.{rnd(100)}f);")
    return "\\n".join(lines) if rnd(2) else "\t".join(lines)


def script(chars, word_len=(2, 8), n_words=(5, 80), sep=" "):
    words = []
    for _ in range(n_words[0] + rnd(n_words[1] - n_words[0])):
        ln = word_len[0] + rnd(word_len[1] - word_len[0])
        words.append("".join(chars[rnd(len(chars))] for _ in range(ln)))
    return sep.join(words)


def cjk():
    k = rnd(3)
    if k == 0:
        return "".join(CJK[zipf_index(len(CJK))] + ("，" if rnd(12) == 0 else "。" if rnd(25) == 0 else "")
                       for _ in range(30 + rnd(300)))
    if k == 1:
        return "".join((CJK if rnd(3) == 0 else KANA)[rnd(len(KANA))] + ("、" if rnd(15) == 0 else "")
                       for _ in range(30 + rnd(300)))
    return script(HANGUL, (1, 5), (5, 60))


def other():
    k = rnd(4)
    return script(CYR if k == 0 else GRK if k == 1 else ARA if k == 2 else DEV)


def misc():
    parts = []
    for _ in range(5 + rnd(30)):
        k = rnd(6)
        if k == 0:
            parts.append(f"{2000 + rnd(30)}-{1 + rnd(12):02d}-{1 + rnd(28):02d}T{rnd(24):02d}:{rnd(60):02d}:{rnd(60):02d}Z")
        elif k == 1:
            parts.append(f"https://www.{VOCAB[zipf_index(len(VOCAB))]}.org/{VOCAB[rnd(len(VOCAB))]}/{rnd(10**6)}.html")
        elif k == 2:
            parts.append(f"{rnd(10**9):,}.{rnd(100):02d}")
        elif k == 3:
            parts.append(EMOJI[rnd(len(EMOJI))] * (1 + rnd(3)))
        elif k == 4:
            parts.append(" " * (1 + rnd(12)) + "\t" * rnd(3))
        else:
            parts.append(f"{rnd(256)}.{rnd(256)}.{rnd(256)}.{rnd(256)}")
    return " ".join(parts)


KINDS = [(60, prose), (12, code), (12, cjk), (8, other), (8, misc)]
out = sys.stdout
written = 0
buf = []
while written < TARGET:
    r = rnd(100)
    for w, f in KINDS:
        if r < w:
            doc = f()
            break
        r -= w
    line = doc.replace("\n", " ") + "\n"
    buf.append(line)
    written += len(line.encode("utf-8"))
    if len(buf) >= 1000:
        out.write("".join(buf))
        buf = []
out.write("".join(buf))
