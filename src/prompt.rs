//! Automatic1111's prompt syntax: emphasis — `(word)` ×1.1, `[word]` ÷1.1, `(word:1.3)`,
//! nesting, `\(` `\)` `\[` `\]` `\\` as literal characters, `BREAK` — and its token chunks:
//! a prompt of any length as 75-token chunks, each wrapped in start/end tokens (77 ids) with
//! one weight per id. Written from Automatic1111's `parse_prompt_attention`
//! (modules/prompt_parser.py) and `tokenize_line` (modules/sd_hijack_clip.py), including
//! their leniencies: an unbalanced bracket is not an error (an unclosed one weighs the rest
//! of the prompt, a stray closing one is text). Not supported: prompt editing
//! (`[a:b:0.5]`, `[a|b]`), `AND`, textual-inversion embeddings; they are read as text.

use crate::tokenizer::ClipTokenizer;

/// Tokens per chunk between the start and end tokens.
pub const CHUNK_TOKENS: usize = 75;
/// Automatic1111's "prompt word wrap length limit" (`comma_padding_backtrack`, default 20): a
/// chunk that fills up within this many tokens of a comma ends after the comma instead, and
/// the words after it move to the next chunk.
pub const COMMA_BACKTRACK: usize = 20;

/// The most chunks a prompt may take (2400 tokens): each is a text-encoder run and 77 more
/// tokens in every cross-attention of every UNet step; Automatic1111 has no limit, but a
/// runaway prompt should fail with a message, not exhaust memory.
pub const MAX_CHUNKS: usize = 32;

/// A piece of the prompt with its weight. `Break` is Automatic1111's `["BREAK", -1]`.
#[derive(Debug, Clone, PartialEq)]
pub enum Fragment {
    Text(String, f64),
    Break,
}

const ROUND: f64 = 1.1;
const SQUARE: f64 = 1.0 / 1.1;

/// Splits a prompt into text with weights, as `parse_prompt_attention` does: brackets
/// multiply the weight of everything inside them, runs of equal weight are merged, an empty
/// prompt is one empty fragment. Fails only on a `(text:weight)` whose weight is not a number
/// (e.g. `(a:1.2.3)`), where Automatic1111 stops with a Python error.
pub fn parse_attention(prompt: &str) -> Result<Vec<Fragment>, String> {
    // Working list as Automatic1111 keeps it: (text, weight), BREAK as ("BREAK", -1).
    let mut res: Vec<(String, f64)> = Vec::new();
    let mut round: Vec<usize> = Vec::new();
    let mut square: Vec<usize> = Vec::new();
    let multiply = |res: &mut Vec<(String, f64)>, from: usize, by: f64| res[from..].iter_mut().for_each(|r| r.1 *= by);
    let chars: Vec<char> = prompt.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                // `\(` `\)` `\[` `\]` `\\` give the character; a lone backslash gives nothing.
                let escaped = chars.get(i + 1).filter(|n| "()[]\\".contains(**n));
                res.push((escaped.map(|n| n.to_string()).unwrap_or_default(), 1.0));
                i += 1 + escaped.is_some() as usize;
            }
            '(' => {
                round.push(res.len());
                i += 1;
            }
            '[' => {
                square.push(res.len());
                i += 1;
            }
            ':' => match weight_at(&chars, i) {
                Some((weight, end)) if !round.is_empty() => {
                    // Automatic1111 stops with a Python error on "1.2.3"; an overflow to
                    // infinity would turn the picture into NaN.
                    let w: f64 = weight.parse().ok().filter(|w: &f64| w.is_finite()).ok_or_else(|| {
                        format!(
                            "«prompt»: the weight in \"{}\" is not a number",
                            chars[i..end].iter().collect::<String>()
                        )
                    })?;
                    let from = round.pop().expect("checked");
                    multiply(&mut res, from, w);
                    i = end;
                }
                Some((_, end)) => {
                    push_text(&mut res, &chars[i..end].iter().collect::<String>());
                    i = end;
                }
                None => {
                    push_text(&mut res, ":");
                    i += 1;
                }
            },
            ')' | ']' => {
                let (open, by) = if c == ')' { (&mut round, ROUND) } else { (&mut square, SQUARE) };
                match open.pop() {
                    Some(from) => multiply(&mut res, from, by),
                    None => push_text(&mut res, &c.to_string()),
                }
                i += 1;
            }
            _ => {
                let end = (i..chars.len()).find(|&j| "\\()[]:".contains(chars[j])).unwrap_or(chars.len());
                push_text(&mut res, &chars[i..end].iter().collect::<String>());
                i = end;
            }
        }
    }
    // Unclosed brackets weigh everything after them (round ones first, as Automatic1111).
    for from in round {
        multiply(&mut res, from, ROUND);
    }
    for from in square {
        multiply(&mut res, from, SQUARE);
    }
    if res.is_empty() {
        res.push((String::new(), 1.0));
    }
    let mut merged: Vec<(String, f64)> = Vec::with_capacity(res.len());
    for (text, weight) in res {
        match merged.last_mut() {
            Some(last) if last.1 == weight => last.0.push_str(&text),
            _ => merged.push((text, weight)),
        }
    }
    let fragment = |(text, weight): (String, f64)| match (text.as_str(), weight) {
        ("BREAK", -1.0) => Fragment::Break,
        _ => Fragment::Text(text, weight),
    };
    Ok(merged.into_iter().map(fragment).collect())
}

/// `:<number>)` at `i` (Automatic1111's `:([+-]?[.\d]+)\)`): the number's text and the index
/// after the `)`.
fn weight_at(chars: &[char], i: usize) -> Option<(String, usize)> {
    let mut j = i + 1;
    if matches!(chars.get(j), Some('+' | '-')) {
        j += 1;
    }
    let digits = j;
    while chars.get(j).is_some_and(|c| *c == '.' || c.is_ascii_digit()) {
        j += 1;
    }
    (j > digits && chars.get(j) == Some(&')')).then(|| (chars[i + 1..j].iter().collect(), j + 1))
}

/// Plain text, split at each `BREAK` word (Automatic1111's `\s*\bBREAK\b\s*`, the spaces
/// around it dropped).
fn push_text(res: &mut Vec<(String, f64)>, text: &str) {
    let chars: Vec<char> = text.chars().collect();
    let word = |c: Option<&char>| c.is_some_and(|c| c.is_alphanumeric() || *c == '_');
    let (mut part_start, mut i) = (0, 0);
    while i + 5 <= chars.len() {
        let is_break = chars[i..i + 5].iter().copied().eq("BREAK".chars())
            && !word(i.checked_sub(1).and_then(|p| chars.get(p)))
            && !word(chars.get(i + 5));
        if !is_break {
            i += 1;
            continue;
        }
        let mut before = i;
        while before > part_start && python_space(chars[before - 1]) {
            before -= 1;
        }
        let mut after = i + 5;
        while after < chars.len() && python_space(chars[after]) {
            after += 1;
        }
        res.push((chars[part_start..before].iter().collect(), 1.0));
        res.push(("BREAK".into(), -1.0));
        part_start = after;
        i = after;
    }
    res.push((chars[part_start..].iter().collect(), 1.0));
}

/// Python's `\s` (str.isspace), which also counts the \x1c–\x1f separators.
fn python_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// An Automatic1111 "extra network" tag, `<KIND:ARGS>` (`<lora:NAME:0.8>`, `<hypernet:…>`):
/// tags are taken out of the prompt before it is parsed (its `extra_networks.parse_prompt`,
/// same pattern `<(\w+):([^>]+)>`), whatever their kind.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkTag {
    pub kind: String,
    /// ARGS split at `:`.
    pub args: Vec<String>,
}

/// The prompt without its extra-network tags, and the tags in order.
pub fn extra_networks(prompt: &str) -> (String, Vec<NetworkTag>) {
    let (mut text, mut tags, mut rest) = (String::with_capacity(prompt.len()), Vec::new(), prompt);
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let kind_len = after.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(after.len());
        let args = after[kind_len..].strip_prefix(':').filter(|_| kind_len > 0);
        match args.and_then(|a| a.find('>').filter(|&end| end > 0).map(|end| (&a[..end], &a[end + 1..]))) {
            Some((args, after_tag)) => {
                text.push_str(&rest[..open]);
                tags.push(NetworkTag { kind: after[..kind_len].to_string(), args: args.split(':').map(str::to_string).collect() });
                rest = after_tag;
            }
            None => {
                text.push_str(&rest[..=open]);
                rest = after;
            }
        }
    }
    text.push_str(rest);
    (text, tags)
}

/// A `<lora:NAME[:WEIGHT]>` tag.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraTag {
    pub name: String,
    pub scale: f32,
}

/// The `<lora:…>` tags of a prompt. Automatic1111's third argument (a UNet weight apart from
/// the text encoder's) and named arguments are refused unless they change nothing.
pub fn lora_tags(prompt: &str) -> Result<Vec<LoraTag>, String> {
    let (_, tags) = extra_networks(prompt);
    tags.into_iter()
        .filter(|t| t.kind == "lora")
        .map(|t| {
            let tag = format!("<lora:{}>", t.args.join(":"));
            let number = |s: &String| s.trim().parse::<f32>().ok().filter(|v| v.is_finite());
            let scale = match t.args.get(1) {
                None => 1.0,
                Some(s) => number(s).ok_or_else(|| format!("{tag}: the weight {s:?} is not a number"))?,
            };
            if t.args.len() > 3 || t.args.get(2).is_some_and(|u| number(u) != Some(scale)) {
                return Err(format!("{tag}: only one weight is supported (text encoder and UNet alike)"));
            }
            Ok(LoraTag { name: t.args[0].trim().to_string(), scale })
        })
        .collect()
}

/// The `<lora:…>` tags of a prompt and its negative prompt, in that order.
pub fn request_lora_tags(prompt: &str, negative: Option<&str>) -> Result<Vec<LoraTag>, String> {
    let mut tags = lora_tags(prompt)?;
    tags.extend(negative.map(lora_tags).transpose()?.unwrap_or_default());
    Ok(tags)
}

/// One chunk for the text encoder: 77 ids (start, 75 tokens or padding, end) and a weight
/// per id.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub ids: Vec<i64>,
    pub weights: Vec<f32>,
}

impl Chunk {
    /// Whether any weight is not 1 (otherwise weighting is the identity).
    pub fn weighted(&self) -> bool {
        self.weights.iter().any(|&w| w != 1.0)
    }
}

/// A prompt as Automatic1111's `tokenize_line` makes it: each fragment tokenized on its own,
/// tokens laid into 75-token chunks (a `BREAK` starts a new chunk; a full chunk within
/// [`COMMA_BACKTRACK`] tokens of a comma is cut after the comma), each padded with the end
/// token and wrapped in start/end. At least one chunk, each of `CHUNK_TOKENS + 2` ids whatever
/// the tokenizer's own length (the pipeline's `load_tokenizer` refuses other lengths).
pub fn chunks(tokenizer: &ClipTokenizer, prompt: &str) -> Result<Vec<Chunk>, String> {
    let comma = tokenizer.token_id(",</w>");
    let mut builder = ChunkBuilder { tokenizer, chunks: Vec::new(), tokens: Vec::new(), last_comma: None };
    for fragment in parse_attention(prompt)? {
        let (text, weight) = match fragment {
            Fragment::Break => {
                builder.finish_chunk();
                builder.check_length()?;
                continue;
            }
            Fragment::Text(text, weight) => (text, weight),
        };
        for token in tokenizer.encode_plain(&text)? {
            if Some(token) == comma {
                builder.last_comma = Some(builder.tokens.len());
            } else if builder.tokens.len() == CHUNK_TOKENS {
                builder.move_after_comma();
            }
            if builder.tokens.len() == CHUNK_TOKENS {
                builder.finish_chunk();
            }
            builder.tokens.push((token, weight));
        }
        builder.check_length()?;
    }
    if !builder.tokens.is_empty() || builder.chunks.is_empty() {
        builder.finish_chunk();
    }
    builder.check_length()?;
    Ok(builder.chunks)
}

/// The empty chunk (start, 76 end tokens, weights 1): what a shorter prompt of a pair is
/// padded with, as Automatic1111 pads cond/uncond with the empty prompt's embedding.
pub fn empty_chunk(tokenizer: &ClipTokenizer) -> Chunk {
    let mut builder = ChunkBuilder { tokenizer, chunks: Vec::new(), tokens: Vec::new(), last_comma: None };
    builder.finish_chunk();
    builder.chunks.remove(0)
}

struct ChunkBuilder<'t> {
    tokenizer: &'t ClipTokenizer,
    chunks: Vec<Chunk>,
    /// The current chunk's tokens with their weights.
    tokens: Vec<(u32, f64)>,
    /// Where the current chunk's last comma is.
    last_comma: Option<usize>,
}

impl ChunkBuilder<'_> {
    fn check_length(&self) -> Result<(), String> {
        if self.chunks.len() <= MAX_CHUNKS {
            return Ok(());
        }
        Err(format!(
            "«prompt» is longer than {MAX_CHUNKS} chunks of {CHUNK_TOKENS} tokens (counting BREAKs); shorten it"
        ))
    }

    /// A full chunk with a comma among its last [`COMMA_BACKTRACK`] tokens ends after that
    /// comma; what followed it starts the next chunk.
    fn move_after_comma(&mut self) {
        let Some(comma) = self.last_comma.filter(|&c| self.tokens.len() - c <= COMMA_BACKTRACK) else { return };
        let moved = self.tokens.split_off(comma + 1);
        self.finish_chunk();
        self.tokens = moved;
    }

    /// Pads the current chunk with end tokens to 75, wraps it in start/end; SD 2.x's pad token
    /// (when it is not the end token) replaces everything after the first end token, as
    /// Automatic1111 does before encoding.
    fn finish_chunk(&mut self) {
        let t = self.tokenizer;
        let (bos, eos, pad) = (t.bos_id() as i64, t.eos_id() as i64, t.pad_id() as i64);
        let mut ids = vec![bos];
        let mut weights = vec![1.0f32];
        for (token, weight) in self.tokens.drain(..) {
            ids.push(token as i64);
            weights.push(weight as f32);
        }
        ids.resize(CHUNK_TOKENS + 2, eos);
        weights.resize(CHUNK_TOKENS + 2, 1.0);
        if pad != eos {
            if let Some(first_end) = ids.iter().position(|&id| id == eos) {
                ids[first_end + 1..].fill(pad);
            }
        }
        self.chunks.push(Chunk { ids, weights });
        self.last_comma = None;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn extra_network_tags_are_taken_out() {
        let (text, tags) = super::extra_networks("a <lora:style:0.8> cat, <hypernet:x:1>(b) < c <:x> <d:>");
        assert_eq!(text, "a  cat, (b) < c <:x> <d:>");
        assert_eq!(tags.len(), 2);
        assert_eq!((tags[0].kind.as_str(), tags[0].args.clone()), ("lora", vec!["style".to_string(), "0.8".to_string()]));
        let loras = super::lora_tags("<lora:a> <lora:b:0.5> <lora:c:0.5:0.5>").unwrap();
        assert_eq!(loras.iter().map(|t| (t.name.as_str(), t.scale)).collect::<Vec<_>>(), [("a", 1.0), ("b", 0.5), ("c", 0.5)]);
        assert!(super::lora_tags("<lora:a:x>").is_err());
        assert!(super::lora_tags("<lora:a:0.5:1>").is_err());
    }

    use super::*;

    fn text(t: &str, w: f64) -> Fragment {
        Fragment::Text(t.into(), w)
    }

    fn assert_parses(prompt: &str, want: &[Fragment]) {
        let got = parse_attention(prompt).unwrap();
        assert_eq!(got.len(), want.len(), "{prompt:?}: {got:?}");
        for (g, w) in got.iter().zip(want) {
            match (g, w) {
                (Fragment::Text(gt, gw), Fragment::Text(wt, ww)) => {
                    assert!(gt == wt && (gw - ww).abs() < 1e-12, "{prompt:?}: {got:?}, want {want:?}")
                }
                _ => assert_eq!(g, w, "{prompt:?}"),
            }
        }
    }

    /// Automatic1111's own doctest cases of parse_prompt_attention, and more edge cases (the
    /// expected values from running its parser).
    #[test]
    fn parses_as_automatic1111() {
        assert_parses("normal text", &[text("normal text", 1.0)]);
        assert_parses("an (important) word", &[text("an ", 1.0), text("important", 1.1), text(" word", 1.0)]);
        assert_parses("(unbalanced", &[text("unbalanced", 1.1)]);
        assert_parses("\\(literal\\]", &[text("(literal]", 1.0)]);
        assert_parses("(unnecessary)(parens)", &[text("unnecessaryparens", 1.1)]);
        assert_parses(
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            &[
                text("a ", 1.0),
                text("house", 1.3 * 1.1 * 1.1),
                text(" ", 1.1),
                text("on", 1.0),
                text(" a ", 1.1),
                text("hill", 0.55),
                text(", sun, ", 1.1),
                text("sky", 1.1f64.powi(4)),
                text(".", 1.1),
            ],
        );
        assert_parses("", &[text("", 1.0)]);
        assert_parses("((word))", &[text("word", 1.1 * 1.1)]);
        assert_parses("[word]", &[text("word", 1.0 / 1.1)]);
        assert_parses("[[word]]", &[text("word", 1.0 / 1.1 / 1.1)]);
        assert_parses("(a:0.5) b", &[text("a", 0.5), text(" b", 1.0)]);
        assert_parses("(a:-1)", &[text("a", -1.0)]);
        assert_parses("a BREAK b", &[text("a", 1.0), Fragment::Break, text("b", 1.0)]);
        assert_parses("BREAK", &[text("", 1.0), Fragment::Break, text("", 1.0)]);
        assert_parses("aBREAK b", &[text("aBREAK b", 1.0)]);
        assert_parses("(a BREAK b)", &[text("a", 1.1), text("BREAK", -1.1), text("b", 1.1)]);
        assert_parses("stray) and] brackets", &[text("stray) and] brackets", 1.0)]);
        assert_parses("a: b", &[text("a: b", 1.0)]);
        assert_parses("x:1.5) y", &[text("x:1.5) y", 1.0)]);
        assert_parses("a \\ b \\\\ c", &[text("a  b \\ c", 1.0)]);
        assert_parses("[a (b] c)", &[text("a ", 1.0 / 1.1), text("b", 1.0), text(" c", 1.1)]);
        assert_parses("(a [b:1.5) c", &[text("a ", 1.5), text("b", 1.5 / 1.1), text(" c", 1.0 / 1.1)]);
        assert!(parse_attention("(a:1.2.3)").is_err());
        assert!(parse_attention(&format!("(a:{})", "9".repeat(400))).is_err());
    }
}
