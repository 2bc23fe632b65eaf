#!/usr/bin/env python
"""Generate the tokenizer test corpus and its reference ids (tests/fixtures/tokenizer/).

Writes
  tests/fixtures/tokenizer/corpus.json          the strings and the expected ids
  tests/fixtures/tokenizer/tiny/tokenizer.json  a small byte-level BPE tokenizer.json

Reference: Hugging Face `tokenizers` on the real GPT-2 vocabulary
(shared/data/gpt2-tokenizer/{vocab.json,merges.txt}, beside the clone or under
CVENE_SHARED), built as transformers' GPT2TokenizerFast builds it: BPE model from the two
files, ByteLevel pre-tokenizer (add_prefix_space=False), ByteLevel decoder, and
"<|endoftext|>" a special added token. Every valid string is also encoded by
transformers' GPT2TokenizerFast(vocab_file, merges_file) and must give the same ids.

tiny/tokenizer.json: the first TINY_MERGES merges of GPT-2 and the tokens they make
(GPT-2 gives merge r the id 256 + r, so the ids are kept) plus a few whole words no merge
makes (TINY_WORDS, which only ignore_merges can produce), saved by `tokenizers` with
other settings than GPT-2 so that the tokenizer.json path is tested on its own:
add_prefix_space=True, ignore_merges=True, and added tokens of both passes:
"<|endoftext|>" (special, normalized=false), "<|user|>" and "<|assistant|>" (special,
normalized=true), " [MASK]" (normalized=true, content with a space) and "er|>"
(normalized=false, so it is split out before "<|user|>" can match: tokenizers extracts
non-normalized added tokens first). Its expected ids come from Tokenizer.from_file of
the written file.

Strings are stored as base64 of their bytes, so the corpus can hold invalid UTF-8.
Neither `tokenizers` nor GPT-2's encoder.py can take invalid UTF-8 (Python str cannot
hold it), so for those strings ("ref": "contract") the expected ids follow cvene's
documented contract: each byte that is not part of a well-formed UTF-8 sequence is one
character of the class "not letter, number or space". They are computed with the
reference's own pieces: the pre-tokenizer runs on the text with each invalid byte
replaced by U+E000 (a private-use character, of that class), the piece boundaries are
mapped back to the bytes, and each piece's bytes are merged by the reference BPE model
(tokenizers' Model.tokenize on the piece's byte-level string). Decoding must return the
exact bytes (tokenizers would return U+FFFD for them). The tiny tokenizer has no
expected ids for these strings; the test checks its round trip only.

Deterministic: the strings come from a fixed SplitMix64 generator, not `random`.

    python tools/make_tokenizer_corpus.py
"""

import base64
import hashlib
import json
import os
import platform
import sys
import unicodedata

import tokenizers
import transformers
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import GPT2TokenizerFast

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("CVENE_SHARED", os.path.join(REPO, "..", "shared"))
GPT2_DIR = os.path.join(SHARED, "data", "gpt2-tokenizer")
OUT_DIR = os.path.join(REPO, "tests", "fixtures", "tokenizer")
SIZE_LIMIT = 2 * 1024 * 1024
TINY_MERGES = 2000
TINY_WORDS = [" tokenizer", " interventions", "tokenizer", " Привет", " 😀", " 123", "!!!"]
MIN_CASES = 2000


class Rng:
    """SplitMix64: the same numbers on every Python version."""

    def __init__(self, seed):
        self.s = seed & 0xFFFFFFFFFFFFFFFF

    def next(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        return z ^ (z >> 31)

    def below(self, n):
        return self.next() % n

    def pick(self, seq):
        return seq[self.below(len(seq))]

    def chance(self, p_percent):
        return self.below(100) < p_percent


# ---- fragments ---------------------------------------------------------------

WORDS = """the quick brown fox jumps over lazy dog Hello World GPT tokenizer byte pair encoding
interventions causal neural network residual stream attention head layer embedding OpenAI
HuggingFace transformers Python C11 CMake a I an of to in is it that was for on are with as
his they be at one have this from or had by hot word but what some we can out other were all
there when up use your how said each she which do their time if will way about many then them
write would like so these her long make thing see him two has look more day could go come did
number sound no most people my than first water been call who oil its now find down get made
may part Mississippi antidisestablishmentarianism supercalifragilisticexpialidocious
pneumonoultramicroscopicsilicovolcanoconiosis HTTPServer XMLHttpRequest camelCaseWord
snake_case_word kebab-case-word SCREAMING_CASE iPhone eBay McDonald O'Neil naïve café résumé
Zürich façade coöperate jalapeño São Paulo Kraków Ærøskøbing Œuvre straße ĳssel""".split()

CONTRACTIONS = [
    "don't", "I'm", "you're", "we've", "she'll", "he'd", "it's", "can't", "won't", "shan't",
    "DON'T", "I'M", "YOU'RE", "WE'VE", "SHE'LL", "HE'D", "IT'S", "Don'T", "You'Re", "We'Ve",
    "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'VE", "'M", "'LL", "'D",
    "'Re", "'rE", "'", "''", "'''", "'''s", "'ss", "'sup", "'tis", "'twas", "'99", "'em",
    "y'all", "o'clock", "rock'n'roll", "ma'am", "'ll've", "I'd've", "it’s", "don’t", "'x",
    "''s", "' s", "'\u0301s", "l'amour", "aujourd'hui", "'re'", "'d'", "'m'", "'''''",
]

NUMBERS = [
    "0", "7", "42", "123", "1234", "12345", "3.14159", "1,000,000", "-17", "+3", "1e10", "2.5e-3",
    "0x1F", "0b1010", "007", "1st", "2nd", "3rd", "4th", "19.99", "$5", "€10", "100%", "24/7",
    "12:30", "2024-01-31", "v1.2.3", "192.168.0.1", "+1-555-0100", "٠١٢٣٤٥٦٧٨٩", "१२३४", "১২৩",
    "１２３４", "²³", "½", "¾", "⅓", "Ⅻ", "ⅷ", "①②③", "⑴", "𝟙𝟚𝟛", "〇", "三", "𐌠", "፩፪", "൧൨",
    "๑๒๓", "٣.١٤", "99999999999999999999", "0.000000001", "1_000_000", "6.022e23",
]

SCRIPTS = {
    "greek": "Καλημέρα κόσμε Ελληνικά ΑΒΓΔ αβγδ ἀρχὴ λόγος",
    "cyrillic": "Привет мир Съешь же ещё этих мягких французских булок ЁЖ ёж Ґ ї",
    "armenian": "Բարեւ աշխարհ Հայերեն",
    "hebrew": "שלום עולם עִבְרִית בְּרֵאשִׁית",
    "arabic": "مرحبا بالعالم العربية السَّلَامُ عَلَيْكُمْ ﷺ",
    "persian": "سلام دنیا فارسی ۱۲۳",
    "devanagari": "नमस्ते दुनिया हिन्दी क्षत्रिय",
    "bengali": "ওহে বিশ্ব বাংলা",
    "gurmukhi": "ਸਤਿ ਸ੍ਰੀ ਅਕਾਲ",
    "gujarati": "નમસ્તે ગુજરાતી",
    "tamil": "வணக்கம் உலகம் தமிழ்",
    "telugu": "నమస్కారం తెలుగు",
    "kannada": "ನಮಸ್ಕಾರ ಕನ್ನಡ",
    "malayalam": "നമസ്കാരം മലയാളം",
    "sinhala": "ආයුබෝවන් සිංහල",
    "thai": "สวัสดีชาวโลก ภาษาไทย",
    "lao": "ສະບາຍດີ ພາສາລາວ",
    "tibetan": "བཀྲ་ཤིས་བདེ་ལེགས།",
    "myanmar": "မင်္ဂလာပါ မြန်မာ",
    "khmer": "សួស្តី​ពិភពលោក ខ្មែរ",
    "georgian": "გამარჯობა მსოფლიო ქართული",
    "ethiopic": "ሰላም ልዑል አማርኛ",
    "cherokee": "ᎣᏏᏲ ᏣᎳᎩ",
    "hangul": "안녕하세요 세계 한국어 각",
    "hiragana": "こんにちは世界 ひらがな",
    "katakana": "カタカナ コンピューター ｶﾀｶﾅ",
    "cjk": "你好世界 中文字符 漢字 𠀀𠀁 𪚥",
    "mongolian": "ᠮᠣᠩᠭᠣᠯ\u180eᠪᠢᠴᠢᠭ",
    "canadian": "ᐊᐃᐅ ᓄᓇᕗᑦ",
    "runic": "ᚠᚢᚦᚨᚱᚲ ᛖᛚᛞ",
    "ogham": "ᚁᚂᚃ\u1680ᚄᚅ",
    "gothic": "𐌰𐌱𐌲 𐍈",
    "math": "𝐀𝐁𝐂 𝑎𝑏𝑐 𝔸𝔹 ∀x∈ℝ: x²≥0",
    "cuneiform": "𒀀𒀁𒀂",
    "hieroglyph": "𓀀𓀁𓂀",
    "vietnamese": "Tiếng Việt có dấu: Xin chào thế giới",
    "polish": "Zażółć gęślą jaźń",
    "turkish": "İstanbul ıı Iİ ğüşöç",
    "icelandic": "Þetta er ð íslenska",
    "yoruba": "Ẹ kú àárọ̀",
    "syriac": "ܫܠܡܐ ܥܠܡܐ",
    "thaana": "ދިވެހި",
    "nko": "ߒߞߏ",
    "tifinagh": "ⵜⴰⵎⴰⵣⵉⵖⵜ",
    "braille": "⠓⠑⠇⠇⠕",
    "linear_b": "𐀀𐀁𐀂",
    "vai": "ꕙꔤ",
    "yi": "ꆈꌠꁱꂷ",
}
SCRIPT_TEXTS = list(SCRIPTS.values())

COMBINING = [
    "e\u0301", "a\u0308\u0304", "n\u0303", "\u0301", " \u0301", "\u0301a", "Z\u0337\u0322\u031ba\u0334l\u0338g\u0337o\u0336",
    "q\u0307\u0323", "\u0915\u094d\u0937", "\u05e9\u05c1\u05b8", "a\u20dd", "1\u20e3", "x\u0300\u0301\u0302\u0303\u0304",
    "\u1100\u1161\u11a8", "i\u0307", "o\u0328\u0301", "\u0e01\u0e34\u0e4a", "\u0301\u0301\u0301", "A\u030a", "\u00c5",
]

EMOJI = [
    "😀", "😂🤣", "👍", "👍🏽", "👍🏿", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🏳️‍⚧️", "🇺🇸", "🇯🇵🇫🇷🇩🇪", "🇦", "1️⃣", "#️⃣", "❤️", "❤",
    "☺︎", "☺️", "🧑🏿‍🚀", "🫠", "🫶🏼", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "👩‍💻", "🤷‍♀️", "🐈‍⬛", "⌚", "©️", "™️", "🔟", "🆗", "🀄",
    "😀😀😀", "🙂 🙃", "a😀b", "😀a", "😀1", "💯%",
]

WHITESPACE = [
    " ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", "\r", "\v", "\f", "\u00a0", "\u3000",
    "\u2002", "\u2003", "\u2009", "\u200a", "\u202f", "\u205f", "\u2028", "\u2029", "\u0085",
    "\u1680", " \t", "\t ", " \n ", "\n ", " \u00a0", "\u00a0 ", "    ", "        ", " \r\n\t ",
]

NOT_WHITESPACE = ["\u180e", "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\x1c", "\x1d", "\x1e",
                  "\x1f", "\x00", "\x01", "\x7f", "\x1b[0m", "\u00ad", "\u061c", "\u200e", "\u202e"]

PUNCT = [
    "!", "!!!", "?", "?!", "...", "…", ",", ";", ":", ".", "—", "–", "-", "--", "“quoted”", "‘single’",
    "«guillemets»", "„low“", "()", "[]", "{}", "<>", "@", "#", "$", "%", "^", "&", "*", "\\", "/", "|",
    "~", "`", "¿", "¡", "。", "、", "：", "・", "•", "§", "¶", "©", "®", "™", "€", "£", "¥", "→", "←",
    "∑", "∫", "√", "±", "×", "÷", "°", "′", "″", "_", "__init__", "->", "=>", "!=", "==", "<=", ">=",
    "&&", "||", "::", "/*", "*/", "//", "#!", "<!--", "-->", "\"", "'", "\"\"", "`code`", "**bold**",
    "$$", "%%", "^^", "&amp;", "&#x27;", "\\n", "\\\\", "@@", "##",
]

SPECIAL = [
    "<|endoftext|>", "<|endoftext|><|endoftext|>", "<|endoftext|", "|endoftext|>", "<|endoftext||>",
    "<|ENDOFTEXT|>", "<<|endoftext|>>", "<|endoftext|>text", "text<|endoftext|>", " <|endoftext|> ",
    "<|user|>", "<|assistant|>", "[MASK]", " [MASK]", "  [MASK]", "er|>", "<|us", "<|", "|>", "<||>",
    "<|endoftext|>\n", "\n<|endoftext|>",
]

CODE = [
    "def f(x):\n    return x ** 2  # square\n",
    "int main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
    "for (size_t i = 0; i < n; i++) a[i] += b[i] * c;",
    "{\"key\": [1, 2.5, null, true], \"nested\": {\"a\": \"b\"}}",
    "https://example.com/path?q=1&lang=en#frag",
    "mailto:someone@example.org",
    "<div class=\"x\">Hello &amp; goodbye</div>",
    "SELECT * FROM users WHERE id = 42;",
    "$ ls -la /tmp && echo \"done\"\n",
    "    indented\n        more\n\tTabbed\n",
    "x = [i for i in range(10) if i % 2 == 0]",
    "```python\nprint('hi')\n```",
    "| a | b |\n|---|---|\n| 1 | 2 |",
    "C:\\Users\\name\\file.txt",
    "// TODO(someone): fix this\n/* block */",
    "a=1;b=2;c=a+b;",
    "#include <stdio.h>\n#define N 10\n",
    "@decorator\nclass Foo(Bar):\n    pass\n",
]

PROSE = [
    "The quick brown fox jumps over the lazy dog.",
    "It's a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.",
    "I'll be there at 5 o'clock -- don't be late!",
    "She said, \"We've got 99 problems,\" and he'd reply 'you're right'.",
    "In 2023, the model had 1.5B parameters and cost $4,600,000.",
    "   Leading spaces and trailing spaces   ",
    "Multiple\n\nparagraphs\n\n\nwith\tvarious   whitespace.",
    "E=mc² and a²+b²=c²; π≈3.14159…",
    "Emoji in text 😀 are common 👍🏽 these days 🇺🇸.",
    "ALL CAPS SENTENCE WITH CONTRACTIONS: I'M, YOU'RE, IT'S.",
    "Mixed scripts: English, Русский, 中文, العربية, हिन्दी, 日本語, 한국어.",
    "Trailing newline\n",
    "Trailing tab\t",
    "Trailing nbsp\u00a0",
    "Ends with ideographic space\u3000",
]


def script_sweep(rng):
    """For every 256-code-point block with letters, numbers or spaces: a short string of
    code points from the block (assigned ones) with separators."""
    out = []
    seps = ["", " ", "", "1", "x", "!", " ", "  ", "'", "\t"]
    for blk in range(0x110000 >> 8):
        cps = [cp for cp in range(blk << 8, (blk + 1) << 8)
               if not 0xD800 <= cp < 0xE000 and unicodedata.category(chr(cp)) != "Cn"]
        cls = {unicodedata.category(chr(cp))[0] for cp in cps}
        if not cps or not (cls & {"L", "N", "Z"}):
            continue
        parts = []
        for _ in range(12):
            parts.append(chr(rng.pick(cps)))
            if rng.chance(40):
                parts.append(rng.pick(seps))
        out.append(("sweep", "".join(parts)))
    return out


def handwritten():
    out = [("edge", s) for s in [
        "", " ", "  ", "\t", "\n", "a", "A", "1", "!", "'", "é", "😀", "中",
        " a", "a ", " a ", "  a", "a  ", "\ta", "a\t", "\na", "a\n", " 1", " !", " '", "' ", " 's",
        "'s", "a's", "a 's", "a'sb", "abc'", "' s", "x'S", "1's", "!'s", "\u00a0a", "\u3000a",
        " \u00a0a", "\u00a0 a", "  \u00a0a", "a\u00a0", "a \u00a0", "\t\ta", "\t a", " \ta", "a \n b",
        "a  b", "a   b", "a\t\tb", "a\n\nb", "a \r\n b", "hello   world", "hello\u3000\u3000world",
        "1 2 3", "1  2", "12 34", "a1b2c3", "abc123def", "123abc", " 123 ", "1.2.3", "1,2", "a.b",
        "...a", "a...", "!!", " !!", "!! ", "a!b", "a !b", "a! b", "a ! b", "😀 😀", " 😀", "😀 ",
        "\r", "\r\n", "\n\r", " \r", "\x00", "a\x00b", " \x00", "\x1c\x1d\x1e\x1f", "a\x1cb",
        "\u0085", "a\u0085b", "\u2028\u2029", "\u180e", "a\u180eb", "\u200b", "a\u200bb", "\ufeffa",
        "\u1680", "a\u1680b", " \u1680", "\u205f\u3000 ", "\u0301", "a\u0301", " \u0301", "\u0301 ",
    ]]
    for group, items in [("contraction", CONTRACTIONS), ("number", NUMBERS), ("combining", COMBINING),
                         ("emoji", EMOJI), ("whitespace", WHITESPACE), ("notspace", NOT_WHITESPACE),
                         ("punct", PUNCT), ("special", SPECIAL), ("code", CODE), ("prose", PROSE)]:
        for s in items:
            out.append((group, s))
            out.append((group, " " + s))
            out.append((group, "x" + s + " y"))
    for name, s in SCRIPTS.items():
        out.append(("script", s))
        out.append(("script", " " + s + " "))
        out.append(("script", s.upper()))
    for w in WORDS:
        out.append(("word", w))
        out.append(("word", " " + w))
    return out


def long_strings(rng):
    letters = "abcdefghijklmnopqrstuvwxyz"
    rand_word = "".join(rng.pick(letters) for _ in range(4000))
    para = " ".join(rng.pick(WORDS) + rng.pick(["", "", ",", ".", "'s", "!"]) for _ in range(900))
    return [("long", s) for s in [
        "a" * 5000,
        " " + "ab" * 2000,
        rand_word,
        "".join(rng.pick(letters).upper() if rng.chance(30) else rng.pick(letters) for _ in range(3000)),
        "9" * 2000,
        "1234567890" * 150,
        " " * 3000,
        " " * 1000 + "x",
        "\n" * 1000,
        "\t \n\u00a0\u3000" * 200 + "end",
        "!?" * 1000,
        "中文字符" * 500,
        "😀" * 500,
        "👨‍👩‍👧‍👦" * 100,
        "e\u0301" * 1000,
        para,
        "<|endoftext|>" * 100,
        ("hello world " * 300).strip(),
        "supercalifragilisticexpialidocious" * 60,
    ]]


def random_mixes(rng, count):
    pools = [WORDS, CONTRACTIONS, NUMBERS, COMBINING, EMOJI, WHITESPACE, NOT_WHITESPACE, PUNCT,
             SPECIAL, SCRIPT_TEXTS, CODE]
    seps = ["", " ", " ", " ", "  ", "\t", "\n", "\u00a0", "\u3000", "'", "-", "", "_", ". "]
    out = []
    for _ in range(count):
        n = 1 + rng.below(12)
        parts = []
        for _ in range(n):
            pool = rng.pick(pools)
            frag = rng.pick(pool)
            if pool is SCRIPT_TEXTS or len(frag) > 40:
                start = rng.below(len(frag))
                frag = frag[start:start + 1 + rng.below(24)]
            parts.append(frag)
            parts.append(rng.pick(seps))
        s = "".join(parts)
        if rng.chance(15):
            s = s.upper()
        if rng.chance(10):
            s = " " + s
        out.append(("mix", s))
    return out


def invalid_strings(rng):
    fixed = [
        b"\xff", b"\xfe", b"\x80", b"\xbf", b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80", b"\xed\xa0\x80",
        b"\xed\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xf8\x88\x80\x80\x80", b"\xc3",
        b"\xe2\x82", b"\xf0\x9f\x98", b"a\xffb", b" \xff", b"\xff ", b"a \xff b", b"\xff\xfe\xfd",
        b"hello\x80world", b"\xe2\x82\xe2\x82\xac", b"caf\xc3", b"caf\xc3 ok", b"\xc3\xa9\xc3",
        b"\xf0\x9f\x98\x80\xf0\x9f\x98", b"1\xff2", b"'\xffs", b"'s\xff", b"\xff's", b"  \xff",
        b"\t\xff", b"\xff\t", b"<|endoftext|>\xff", b"\xff<|endoftext|>", b"<|endo\xfftext|>",
        b"\xc2\xa0\xff", b"\xe3\x80\x80\xff", b"\xff" * 64, b"\x80" * 100, b"abc\xdf", b"\xdfabc",
        b"\xef\xbf\xbd", b"\xef\xbf\xbd\xff", b"\xef\xbb\xbf\xff", b"\xe0\xa0", b"\xe0\xa0\x80", b"\xf0\x90\x80",
        b"\xf0\x90\x80\x80", b"\xf4\x8f\xbf\xbf", b"\xf4\x8f\xbf", b"x\xed\x9f\xbfy",
    ]
    out = [("invalid", b) for b in fixed]
    valid = [s.encode() for s in WORDS + PUNCT + NUMBERS + EMOJI + SCRIPT_TEXTS[:10]]
    for _ in range(150):
        parts = []
        for _ in range(1 + rng.below(8)):
            if rng.chance(40):
                parts.append(bytes(rng.below(256) for _ in range(1 + rng.below(4))))
            else:
                v = rng.pick(valid)
                if rng.chance(30) and len(v) > 1:  # cut a multi-byte character in half
                    v = v[: 1 + rng.below(len(v) - 1)]
                parts.append(v)
            parts.append(rng.pick([b"", b" ", b"  ", b"\n", b"\t"]))
        out.append(("invalid", b"".join(parts)))
    return out


# ---- references ----------------------------------------------------------------

def gpt2_reference():
    vocab = os.path.join(GPT2_DIR, "vocab.json")
    merges = os.path.join(GPT2_DIR, "merges.txt")
    tok = Tokenizer(models.BPE.from_file(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True)])
    fast = GPT2TokenizerFast(vocab_file=vocab, merges_file=merges)
    return tok, fast


def tiny_tokenizer(path):
    vocab = json.load(open(os.path.join(GPT2_DIR, "vocab.json"), encoding="utf-8"))
    lines = open(os.path.join(GPT2_DIR, "merges.txt"), encoding="utf-8").read().split("\n")
    merges = [tuple(l.split(" ")) for l in lines if l and not l.startswith("#version")]
    small = {t: i for t, i in vocab.items() if i < 256 + TINY_MERGES}
    for r, (a, b) in enumerate(merges[:TINY_MERGES]):
        assert small[a + b] == 256 + r
    # Whole words that no merge makes: only ignore_merges produces them.
    for w in TINY_WORDS:
        small[byte_level(w.encode("utf-8"))] = len(small)
    tok = Tokenizer(models.BPE(small, merges[:TINY_MERGES], ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])
    tok.add_tokens([AddedToken("<|user|>", special=True, normalized=True),
                    AddedToken("<|assistant|>", special=True, normalized=True)])
    tok.add_tokens([AddedToken(" [MASK]", normalized=True), AddedToken("er|>", normalized=False)])
    tok.save(path, pretty=False)
    return Tokenizer.from_file(path)  # the reference is what the file says


BYTE_CHARS = {}


def byte_level(b):
    if not BYTE_CHARS:
        bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
        cs = bs[:]
        n = 0
        for x in range(256):
            if x not in bs:
                bs.append(x)
                cs.append(256 + n)
                n += 1
        BYTE_CHARS.update({x: chr(c) for x, c in zip(bs, cs)})
    return "".join(BYTE_CHARS[x] for x in b)


def contract_ids(tok, data):
    """Expected GPT-2 ids of a byte string with invalid UTF-8 (see the module docstring)."""
    ids, i, eot = [], 0, b"<|endoftext|>"
    segments = []
    while True:
        j = data.find(eot, i)
        segments.append(data[i:] if j < 0 else data[i:j])
        if j < 0:
            break
        segments.append(None)
        i = j + len(eot)
    pt = tok.pre_tokenizer
    for seg in segments:
        if seg is None:
            ids.append(tok.token_to_id("<|endoftext|>"))
            continue
        text = seg.decode("utf-8", errors="surrogateescape")
        chars = [c for c in text]
        sizes = [1 if 0xDC80 <= ord(c) <= 0xDCFF else len(c.encode("utf-8")) for c in chars]
        sub = "".join("\ue000" if 0xDC80 <= ord(c) <= 0xDCFF else c for c in chars)
        starts = [0]
        for s in sizes:
            starts.append(starts[-1] + s)
        for _, (a, b) in pt.pre_tokenize_str(sub):
            piece = seg[starts[a]:starts[b]]
            ids.extend(t.id for t in tok.model.tokenize(byte_level(piece)))
    return ids


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def main():
    if not os.path.isdir(GPT2_DIR):
        sys.exit("GPT-2 tokenizer files not found at %s (set CVENE_SHARED)" % GPT2_DIR)
    rng = Rng(20240531)
    cases = handwritten() + long_strings(rng) + script_sweep(rng)
    cases += random_mixes(rng, max(0, MIN_CASES + 300 - len(cases)))
    seen, uniq = set(), []
    for tag, s in cases:
        b = s.encode("utf-8") if isinstance(s, str) else s
        if b not in seen:
            seen.add(b)
            uniq.append((tag, b))
    valid, invalid = uniq, []
    for tag, b in invalid_strings(rng):  # some are valid on purpose (boundary code points)
        if b in seen:
            continue
        seen.add(b)
        try:
            b.decode("utf-8")
            valid.append(("utf8-boundary", b))
        except UnicodeDecodeError:
            invalid.append((tag, b))

    gpt2, fast = gpt2_reference()
    os.makedirs(os.path.join(OUT_DIR, "tiny"), exist_ok=True)
    tiny_path = os.path.join(OUT_DIR, "tiny", "tokenizer.json")
    tiny = tiny_tokenizer(tiny_path)

    out_cases, mismatch_fast, roundtrip_bad, tiny_ignore = [], 0, 0, 0
    for tag, b in valid:
        s = b.decode("utf-8")
        ids = gpt2.encode(s, add_special_tokens=False).ids
        if fast.encode(s) != ids:
            mismatch_fast += 1
            print("GPT2TokenizerFast disagrees on %r" % s)
        if gpt2.decode(ids, skip_special_tokens=False) != s:
            roundtrip_bad += 1
            print("reference decode(encode(x)) != x for %r" % s)
        tids = tiny.encode(s, add_special_tokens=False).ids
        out_cases.append({"tag": tag, "ref": "tokenizers", "b64": base64.b64encode(b).decode(),
                          "gpt2": ids, "tiny": tids})
    # sanity: the contract reference reproduces tokenizers on valid text
    for c in out_cases[::7]:
        b = base64.b64decode(c["b64"])
        assert contract_ids(gpt2, b) == c["gpt2"], b
    for tag, b in invalid:
        out_cases.append({"tag": tag, "ref": "contract", "b64": base64.b64encode(b).decode(),
                          "gpt2": contract_ids(gpt2, b), "tiny": None})
    # how often ignore_merges changes the tiny tokenizer's output
    plain = Tokenizer.from_str(tiny.to_str().replace('"ignore_merges":true', '"ignore_merges":false'))
    for c in out_cases:
        if c["tiny"] is not None:
            s = base64.b64decode(c["b64"]).decode("utf-8")
            tiny_ignore += plain.encode(s, add_special_tokens=False).ids != c["tiny"]

    meta = {
        "generator": "tools/make_tokenizer_corpus.py",
        "python": platform.python_version(),
        "tokenizers": tokenizers.__version__,
        "transformers": transformers.__version__,
        "unicode": unicodedata.unidata_version,
        "gpt2_vocab_sha256": sha256(os.path.join(GPT2_DIR, "vocab.json")),
        "gpt2_merges_sha256": sha256(os.path.join(GPT2_DIR, "merges.txt")),
        "tiny_merges": TINY_MERGES,
        "n_cases": len(out_cases),
        "n_contract": len(invalid),
    }
    lines = ["{", '"meta": ' + json.dumps(meta, ensure_ascii=True) + ",", '"cases": [']
    for k, c in enumerate(out_cases):
        lines.append(json.dumps(c, ensure_ascii=True, separators=(",", ":")) +
                     ("," if k + 1 < len(out_cases) else ""))
    lines += ["]", "}", ""]
    path = os.path.join(OUT_DIR, "corpus.json")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    size = os.path.getsize(path)
    n_ids = sum(len(c["gpt2"]) for c in out_cases)
    n_bytes = sum(len(base64.b64decode(c["b64"])) for c in out_cases)
    print("wrote %s: %d cases (%d valid, %d invalid UTF-8), %d bytes of text, %d GPT-2 ids, %d bytes"
          % (os.path.relpath(path, REPO), len(out_cases), len(valid), len(invalid), n_bytes, n_ids, size))
    print("wrote %s: %d bytes" % (os.path.relpath(tiny_path, REPO), os.path.getsize(tiny_path)))
    print("GPT2TokenizerFast mismatches: %d; reference round-trip failures: %d; "
          "tiny cases where ignore_merges matters: %d" % (mismatch_fast, roundtrip_bad, tiny_ignore))
    assert len(out_cases) >= MIN_CASES and size < SIZE_LIMIT and mismatch_fast == 0


if __name__ == "__main__":
    main()
