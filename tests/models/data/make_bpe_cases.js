#!/usr/bin/env node
// Writes bpe_cases.json: GPT-2 BPE encodings of test strings by the gpt-3-encoder package's own
// JavaScript encoder (the one in data/npm/gpt-3-encoder-1.1.4.tgz, fetched by
// scripts/fetch_data.sh), plus its regex pre-tokenisation of each string.
//
//   node tests/models/data/make_bpe_cases.js
//
// The strings avoid U+0085 and U+FEFF, the two characters whose \s class differs between
// JavaScript and Python (GPT-2's reference); see models/data/BpeTokenizer.h.
'use strict';
const { execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const repo = path.resolve(__dirname, '..', '..', '..');
const tarball = path.join(repo, 'data', 'npm', 'gpt-3-encoder-1.1.4.tgz');
if (!fs.existsSync(tarball)) {
  console.error(`${tarball} is missing: run scripts/fetch_data.sh first`);
  process.exit(1);
}
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bpe-cases-'));
try {
  execFileSync('tar', ['-xzf', tarball, '-C', tmp]);
  const { encode, decode } = require(path.join(tmp, 'package', 'Encoder.js'));
  // The pre-tokenisation regex, copied from the package's Encoder.js.
  const pat = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

  const sotu = fs.readFileSync(path.join(repo, 'data', 'sotu.txt'), 'utf-8');
  const texts = [
    'Hello world',
    '',
    "I'm here, they're gone; we've, you'll, he'd, it's, 'tis. I'M LOUD'S",
    "don't DON'T o'clock Mr. O'Neil's 'quoted' ''",
    'Numbers: 12345 and 3.14159, 1,000,000 or 2024-06-11 x2 3rd',
    'multiple   spaces    here',
    'line one\nline two\n\n\nthree\n',
    'trailing spaces   ',
    '  leading spaces',
    'tabs\tand\r\nCRLF \t mixed\t\t',
    '   \n  \n',
    'café résumé naïve Ångström Straße œuvre',
    'decomposed: e\u0301 and a\u0308',
    '日本語のテキストと漢字、カタカナ。',
    'emoji 😀👍🏽 and 🎉! 👨‍👩‍👧',
    'Ελληνικά και Русский текст, Ukrainian ї',
    'fractions ½ ¼, superscripts x² y³, circled ①, roman Ⅻ',
    'punctuation...!!! ??? --- *** (parens) [brackets] {braces} <|endoftext|>',
    'non-breaking\u00a0space and em\u2003space and ideographic\u3000space',
    'x'.repeat(40) + ' antidisestablishmentarianism pneumonoultramicroscopic',
    sotu.slice(0, 2000),
  ];
  const cases = texts.map((text) => {
    const ids = encode(text);
    if (decode(ids) !== text) throw new Error(`round trip failed for ${JSON.stringify(text)}`);
    return { text, words: Array.from(text.matchAll(pat), (m) => m[0]), ids };
  });
  const out = path.join(__dirname, 'bpe_cases.json');
  fs.writeFileSync(out, JSON.stringify(cases, null, 1) + '\n');
  console.log(`wrote ${out} (${cases.length} cases)`);
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}
