#!/usr/bin/env python3
"""make_corpus.py — writes tests/tok/corpus.jsonl, the tokenizer conformance corpus.

One {"case": name, "text": string} per line. Hand-written cases (scripts, emoji, numbers,
contractions, whitespace runs, code, special-token look-alikes, control characters,
normalization traps) plus seeded pseudo-random strings drawn from a pool that mixes all of
those. Only code points assigned by Unicode 14 are used (the JS reference and Oniguruma
differ on later ones). Deterministic: the same script always writes the same file.

    python3 tests/tok/make_corpus.py > tests/tok/corpus.jsonl
"""
import json
import sys

cases = []


def add(name, text):
    cases.append((name, text))


# ---- the reference runner's built-in tricky strings (minus the lone surrogate)
for name, text in [
    ('empty', ''), ('ascii', 'Hello world'), ('lead-space', ' Hello'), ('lead-2space', '  two leading spaces'),
    ('trail-space', 'trailing spaces   '), ('tab', '\tTabbed\ttext'), ('nl2', '\n\n'),
    ('para', 'First paragraph.\n\nSecond one.'), ('crlf', 'line1\r\nline2\r\n'), ('ws-mix', '   \n  \t \n\n   x'),
    ('spaces-100', ' ' * 100 + 'end'), ('num-1234567', '1234567'),
    ('num-mixed', 'pi=3.14159, n=1,000,000 and 0x7fff; v2.0.1'), ('num-unicode', '٣٤٥ ١٢ ①②③ Ⅻ ½ ²³'),
    ('contractions', "I'm can't we'll they've he'd it's you're"),
    ('contractions-upper', "I'M CAN'T WE'LL THEY'VE HE'D IT'S YOU'RE"),
    ('contraction-longs', "it'ſ (U+017F long s) and it'K"), ('curly-apostrophe', 'don\u2019t won\u2019t'),
    ('cjk-zh', '你好，世界！这是一个测试。'), ('cjk-ja', '日本語のテキスト、カタカナとひらがな。'), ('korean', '한국어 텍스트입니다'),
    ('emoji', '😀 👍🏽 🤖'), ('emoji-zwj', '👨\u200d👩\u200d👧\u200d👦 family'), ('emoji-flag-vs', '🇫🇷 ❤️ ☺︎'),
    ('combining-nfd', 'e\u0301 A\u030A n\u0303'), ('precomposed-nfc', '\u00e9 \u00c5 \u00f1'),
    ('zalgo', 'z\u0337\u0322\u035aa\u0338l\u0335g\u0335o\u0335'), ('latin-accents', 'naïve café résumé Straße'),
    ('cyrillic', 'Привет, мир!'), ('arabic', 'مرحبا بالعالم'), ('hebrew', 'שלום עולם'), ('devanagari', 'नमस्ते दुनिया'),
    ('thai', 'สวัสดีชาวโลก'), ('math-astral', '𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛'), ('code-py', 'def f(x):\n    return x**2  # square\n'),
    ('code-c', 'if (a&&b) { return *p++; } // done'), ('url', 'https://example.com/path?q=1&r=2#frag'),
    ('repeat-a', 'a' * 64), ('repeat-bang', '!!!!!!!!!!!!????'), ('nbsp', 'a\u00a0b'), ('nel-U+0085', 'a\u0085b'),
    ('bom-U+FEFF', '\ufeffBOM at start'), ('ls-U+2028', 'a\u2028b\u2029c'), ('ideographic-space', '全角\u3000スペース'),
    ('zwsp', 'zero\u200bwidth\u200djoiner'), ('nul', 'a\u0000b'), ('ctrl', 'bell\u0007 esc\u001b[0m del\u007f'),
    ('replacement-char', 'bad \ufffd byte'), ('private-use', '\ue000\uf8ff'), ('noncharacter', '\uffff\ufdd0'),
    ('special-llama3', '<|begin_of_text|>hi<|eot_id|>'), ('special-qwen', '<|im_start|>user\nhi<|im_end|>\n'),
    ('special-gemma', '<start_of_turn>user\nhi<end_of_turn>'), ('special-partial', '<|im_start user <|eot_id'),
]:
    add(name, text)

# ---- scripts
for i, s in enumerate([
    'The quick brown fox jumps over the lazy dog.', 'Ελληνικά: Γειά σου Κόσμε, ΑΒΓΔ αβγδ ς',
    'Українська мова: Ґґ Єє Її', 'Български: Здравей, свят', 'Türkçe: İstanbul ığdır ŞşĞğ',
    'Tiếng Việt: Xin chào thế giới, Nguyễn Thị Ánh', 'Polski: Zażółć gęślą jaźń', 'Čeština: Příliš žluťoučký kůň',
    'Română: Șoseaua țării', 'Íslenska: Þetta er ðæmi', 'Dansk/Norsk: Æbleø Ål', 'Magyar: Árvíztűrő tükörfúrógép',
    'ქართული ენა', 'Հայերեն լեզու', 'አማርኛ ቋንቋ', 'বাংলা ভাষা', 'தமிழ் மொழி', 'తెలుగు భాష', 'ಕನ್ನಡ ಭಾಷೆ',
    'മലയാളം ഭാഷ', 'ગુજરાતી ભાષા', 'ਪੰਜਾਬੀ ਭਾਸ਼ਾ', 'ଓଡ଼ିଆ ଭାଷା', 'සිංහල භාෂාව', 'ພາສາລາວ', 'ភាសាខ្មែរ',
    'မြန်မာဘာသာ', 'བོད་སྐད་', 'ᠮᠣᠩᠭᠣᠯ', 'ᐃᓄᒃᑎᑐᑦ', 'ᏣᎳᎩ', 'فارسی: سلام دنیا', 'اردو: ہیلو دنیا',
    'ܠܫܢܐ ܣܘܪܝܝܐ', 'ދިވެހި', 'ߒߞߏ', 'ⴰⵎⴰⵣⵉⵖ', '繁體中文：憂鬱的臺灣烏龜', '简体中文：机器学习模型的分词器',
    '日本語：吾輩は猫である。名前はまだ無い。', 'ｶﾀｶﾅ ﾊﾝｶｸ', '한글 자모: ㄱㄴㄷ ㅏㅑㅓ', 'Ｆｕｌｌｗｉｄｔｈ　ＡＳＣＩＩ！',
    '𐌰𐌱𐌲 gothic', '𓀀𓀁 hieroglyphs', 'ꦗꦮ javanese', 'ᚠᚢᚦ runes', 'ⲁⲃⲅ coptic', 'Ⓐⓑⓒ ⒜⒝ circled',
    'ﬁ ﬂ ligatures ﬀ', 'ℌ𝔢𝔩𝔩𝔬 𝐁𝐨𝐥𝐝 𝑰𝒕𝒂𝒍𝒊𝒄', 'Cyrillic+Latin: Pаypаl (mixed а)', 'Spanish: ¿Qué tal? ¡Hola! señor',
    'French: l’été où ça s’arrête « guillemets »', 'German: Größe, Übermaß, ẞ', 'Dutch: ĳsje Ĳssel',
]):
    add(f'script-{i}', s)

# ---- emoji (Unicode <= 14)
for i, s in enumerate([
    '🙂🙃😉', '👩🏽\u200d💻 coding', '🏳️\u200d🌈 🏴\u200d☠️', '1️⃣ 2️⃣ #️⃣ *️⃣', '🇯🇵🇺🇸🇩🇪🇧🇷', '👍👍🏻👍🏼👍🏽👍🏾👍🏿',
    '🧑\u200d🤝\u200d🧑', '❤️\u200d🔥 ❤️\u200d🩹', '🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f Scotland',
    'text🙂text', '🙂 🙂  🙂   🙂', '©️®️™️', '☕☔⚡⛄', '🦀🦄🦕🥳🥸', '👁️\u200d🗨️', 'emoji at end 🎉',
]):
    add(f'emoji-{i}', s)

# ---- numbers
for i, s in enumerate([
    '0', '7', '42', '123', '1234', '12345', '123456789', '1234567890123456789', '-17', '+3.5', '3.14159265358979',
    '6.022e23', '1e-9', '0.000001', '1,234,567.89', '1 234 567', '12:34:56', '2024-02-29', '2024/02/29',
    '+1 (555) 123-4567', '$1,000.00', '€99,95', '¥1000', '100%', '50°C', 'v1.2.3-beta.4', '0xDEADBEEF', '0b1010',
    '٠١٢٣٤٥٦٧٨٩', '०१२३४५६७८९', '０１２３４５６７８９', '¹²³⁴⁵', '₀₁₂₃', '½ ⅓ ¼ ⅛ ¾', 'Ⅰ Ⅱ Ⅲ Ⅳ Ⅻ ⅿ', '𝟎𝟏𝟐 𝟘𝟙𝟚',
    'a1b22c333d4444', '1st 2nd 3rd 4th', '99 bottles of beer', 'x=1;y=22;z=333;w=4444',
]):
    add(f'num-{i}', s)

# ---- contractions
for i, s in enumerate([
    "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "''s", "'ss", "'S", "'Re", "'LL", "'lL", "y'all'd've",
    "rock 'n' roll", "it's' 's", " 's", "don't", "DON'T", "Don'T", "o'clock", "O'Neill's", "'tis 'twas",
    "we're\nwe've", "I'd've", "they'll'", "x'\u00e9", "'\u017ft", "l'amour l’amour", "'123", "'' ''' ''''",
    "you'RE We'Ve", "'d'm's't", "can't't", "ʼs modifier apostrophe", "`s backtick",
]):
    add(f'contraction-{i}', s)

# ---- whitespace
for i, s in enumerate([
    ' ', '  ', '   ', ' ' * 7, ' ' * 16, ' ' * 33, '\t', '\t\t', '\t' * 9, '\n', '\n' * 3, '\n' * 12, '\r', '\r\n',
    '\r\n\r\n', '\n\r', ' \n', '\n ', ' \n ', '  \n\n  ', 'a \n b', 'a  \n\n  b', 'word   ', '   word',
    'two  spaces', 'three   spaces', 'tab\tand space \t mix', 'a\u00a0\u00a0b', 'a\u2003b\u2009c', 'a\u3000\u3000b',
    'a\u2028\u2028b', 'a\u0085\u0085b', 'a\u000b\u000cb', 'a\u180eb', 'a\u200bb', ' \u00a0 \u00a0', 'end\n',
    '\n\nstart', 'x' + ' ' * 50 + 'y', '\t\n\t\n\tz', 'a\n\n\n\nb', ' \t\r\n\u000b\u000c',
]):
    add(f'ws-{i}', s)

# ---- code
for i, s in enumerate([
    'import numpy as np\nx = np.array([1, 2, 3])\nprint(x.mean())\n',
    '#include <stdio.h>\nint main(void) {\n\tprintf("%d\\n", 42);\n\treturn 0;\n}\n',
    'const f = (a, b) => a ?? b;\nlet s = `${f(1, null)}`;',
    'fn main() -> Result<(), Box<dyn Error>> {\n    let v: Vec<u8> = vec![0; 16];\n    Ok(())\n}',
    '{"key": "value", "n": [1, 2.5, -3e4], "nested": {"a": null, "b": true}}',
    '<!DOCTYPE html>\n<html><head><title>T</title></head>\n<body><p class="x">Hi &amp; bye</p></body></html>',
    'SELECT id, name FROM users WHERE age >= 18 AND name LIKE \'A%\' ORDER BY id DESC;',
    '#!/bin/bash\nfor f in *.txt; do echo "$f" | grep -E \'^[a-z]+$\' && rm -f -- "$f"; done',
    '^(?:[a-z0-9!#$%&\'*+/=?^_`{|}~-]+)@\\w+\\.(com|org)$',
    '# Title\n\n- item **bold** and _it_\n- [link](http://x.y/z?a=b)\n\n```python\nprint(1)\n```\n',
    '\\begin{equation} E = mc^2 \\quad \\frac{a}{b} \\end{equation}',
    '--- a/file.c\n+++ b/file.c\n@@ -1,3 +1,3 @@\n-int x = 1;\n+int x = 2;\n',
    'x+=1;y-=2;z*=3;w/=4;a%=5;b<<=6;c>>=7;d&=8;e|=9;f^=10;',
    'if(a!=b&&c<=d||!e){f=g?h:i;}', '    indented\n        more\n    back', 'obj.method().chain()?.maybe!.x',
    'def __init__(self, *args, **kwargs):\n        super().__init__(*args, **kwargs)',
    'std::vector<std::pair<int, std::string>> v{{1, "a"}};', 'a_b_c __dunder__ CamelCase snake_case kebab-case',
    'data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==',
    '    return [x for x in range(10) if x % 2 == 0]', 'C:\\Users\\name\\Documents\\file.txt',
    'user@example.com, first.last+tag@sub.domain.org', '192.168.0.1:8080 [::1]:443 fe80::1%eth0',
]):
    add(f'code-{i}', s)

# ---- special-token look-alikes (all six families)
specials = ['<|begin_of_text|>', '<|end_of_text|>', '<|eot_id|>', '<|start_header_id|>', '<|end_header_id|>',
            '<|reserved_special_token_0|>', '<|reserved_special_token_250|>', '<|endoftext|>', '<|im_start|>',
            '<|im_end|>', '<tool_call>', '</tool_call>', '<think>', '</think>', '<|fim_prefix|>', '<bos>', '<eos>',
            '<pad>', '<unk>', '<start_of_turn>', '<end_of_turn>', '<start_of_image>', '<unused0>', '<unused99>',
            '<s>', '</s>', '<｜begin▁of▁sentence｜>', '<｜end▁of▁sentence｜>', '<｜User｜>', '<｜Assistant｜>',
            '<｜tool▁calls▁begin｜>', '<|EOT|>', '<0x41>', '[INST]', '<h1>', '<table>', '</sup>']
for i, sp in enumerate(specials):
    add(f'special-{i}', sp)
    add(f'special-ctx-{i}', f'before {sp}after{sp} {sp}\n')
for i, s in enumerate([
    '<|im_start', 'im_start|>', '<| im_start |>', '<|IM_START|>', '<<|im_end|>>', '<|im_start|><|im_start|>',
    '< s >', '<s', 's>', '<s><s></s>', '<S>', '<bos >', '<start_of_turn >', '<|begin_of_text |>',
    '<|reserved_special_token_9999|>', '<unused99999>', '<｜User>', '<|User|>', '▁', '▁▁▁', 'a▁b', '▁<s>',
    '\t\t\t\t', '\n\n\n\n\n', '<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n',
    '<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>', '<start_of_turn>model\nSure.<end_of_turn>\n',
    '[INST] question [/INST] answer</s>', '<think>\nreasoning\n</think>\n\nanswer',
]):
    add(f'lookalike-{i}', s)

# ---- control and odd characters
for i, s in enumerate([
    ''.join(chr(c) for c in range(0, 32)), '\u007f\u0080\u0081\u009f', 'x\u0000\u0000y', '\u0000',
    'a\u00adb soft hyphen', 'abc\u202edcba\u202c bidi', '\u200e\u200f marks', '\u2060word joiner\u2060',
    '\ufe0f alone', '\u0301 leading combining', 'a\u0300\u0301\u0302\u0303\u0304', '\U000e0001 tag',
    '\U0010fffd plane 16 private', '\U000f0000', '\ufffe', '\U0001fffe', 'tab\u0009vt\u000bff\u000c',
    '\u001e\u001f separators', '\u0007\u0008\u001b', '\u061c arabic mark', '\u034f cgj',
]):
    add(f'ctrl-{i}', s)

# ---- normalization traps (NFC / NFKC)
for i, s in enumerate([
    '\u212b angstrom \u2126 ohm \u212a kelvin', '\uf900\uf901 compat ideographs', 'a\u0323\u0302 vs a\u0302\u0323',
    '\u1100\u1161\u11a8 jamo', 'e\u0301\u0301', '\u0041\u030a\u0301', '\u00c5\u0301', 'ｱｲｳ', '①⑩⑳',
    '\u1e9b\u0323', '\u0958\u0959', '\u0fb2\u0f80', '\u2163', 'ﷺ', '\u03d3 \u03d4', 'ǅ ǈ ǋ',
    '\u0344 \u0340\u0341', 'ॐ ॒॑', 'À\u0316', '\u0e33 \u0eb3',
]):
    add(f'norm-{i}', s)

# ---- long strings
add('long-spaces-1000', ' ' * 1000)
add('long-word-2000', 'supercalifragilistic' * 100)
add('long-digits-500', '1234567890' * 50)
add('long-newlines', '\n' * 300)
add('long-mixed-ws', ' \t' * 200 + 'x')
add('long-cjk', '的一是不了人我在有他这为之大来以个中上们' * 20)
add('long-emoji', '😀' * 200)
add('long-punct', '!?.,;:' * 100)
add('long-dashes', '-' * 500 + '=' * 500)
add('long-sentence', ' '.join(['lorem ipsum dolor sit amet consectetur'] * 40))

# ---- seeded pseudo-random strings over a pool of every kind of character above
pool = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") * 3 + list(
    "      \t\n\r'\"!?.,;:-_()[]{}<>|/\\@#$%^&*+=~`") * 2 + list(
    "éèêëàçñüößøåæœÉÀÇÑÜ") + list("абвгдежзийклмнопрстуфхцчшщъыьэюя") + list("αβγδεζηθλμνξπρσςτφχψω") + list(
    "你好世界中文字符测试的一是了我") + list("あいうえおカキクケコ") + list("한국어텍스트") + list(
    "مرحبابالعالم") + list("שלוםעולם") + list("नमस्तेदुनिया") + list("สวัสดี") + [
    '😀', '👍', '🏽', '\u200d', '❤', '\ufe0f', '🇫', '🇷', '\u0301', '\u0308', '\u00a0', '\u3000', '\u2028', '\u0085',
    '\u0000', '\u0007', '\u001b', '\u007f', '\ufeff', '\u200b', '½', '²', '٣', '①', '𝔘', 'ſ', 'K', 'ǅ', '\u212b',
    '<|', '|>', '<s>', '</s>', '<|im_end|>', '<bos>', '▁', "'s", "'ll", "'T", '\n\n', '  ', '\t\t', '123', '4567']

state = 0x2545F4914F6CDD1D


def rnd(n):
    global state
    state ^= (state << 13) & 0xFFFFFFFFFFFFFFFF
    state ^= state >> 7
    state ^= (state << 17) & 0xFFFFFFFFFFFFFFFF
    return state % n


for i in range(70):
    length = 1 + rnd(60 if i < 60 else 400)
    add(f'random-{i}', ''.join(pool[rnd(len(pool))] for _ in range(length)))

seen = set()
for name, text in cases:
    assert name not in seen, name
    seen.add(name)
    for ch in text:
        assert not (0xD800 <= ord(ch) <= 0xDFFF), name
    sys.stdout.write(json.dumps({'case': name, 'text': text}, ensure_ascii=False) + '\n')
print(f'make_corpus: {len(cases)} cases', file=sys.stderr)
