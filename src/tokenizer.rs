//! The CLIP tokenizer of SD's `tokenizer/` folder, matching what diffusers gets from
//! transformers 5.x `CLIPTokenizer` (`tokenizer(prompt, padding="max_length",
//! max_length=model_max_length, truncation=True)`).
//!
//! transformers rebuilds CLIP's pipeline from the vocabulary whatever the folder holds: it
//! takes only vocab + merges (from tokenizer.json when present, else vocab.json +
//! merges.txt) and sets the normalizer, pre-tokenizer and post-processor itself. We do the
//! same, so a tokenizer.json with an odd pipeline gives transformers' ids, not its own.
//! Special tokens follow transformers' loading rules too: in SD 2.x the pad token "!" is
//! registered as a special token, so a "!" in the prompt becomes id 0, not "!</w>".

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormalizerSequence, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

/// The files of a `tokenizer/` folder, as bytes (the crate also runs in browsers).
/// Needs `tokenizer_json`, or `vocab_json` + `merges_txt`; the configs are optional.
#[derive(Debug, Clone, Default)]
pub struct TokenizerFiles {
    pub tokenizer_json: Option<Vec<u8>>,
    pub vocab_json: Option<Vec<u8>>,
    pub merges_txt: Option<Vec<u8>>,
    pub tokenizer_config_json: Option<Vec<u8>>,
    pub special_tokens_map_json: Option<Vec<u8>>,
}

/// One prompt, ready for the text encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// `max_length` ids: bos, up to `max_length - 2` tokens, eos, then the pad id.
    pub ids: Vec<i64>,
    /// The prompt had more tokens than fit.
    pub truncated: bool,
    /// What was cut off, decoded as diffusers does for its
    /// "The following part of your input was truncated" warning.
    pub removed_text: Option<String>,
}

/// CLIP's default context length, used when tokenizer_config.json gives none.
const DEFAULT_MAX_LENGTH: usize = 77;
/// transformers' "no limit" sentinel is 1e30; anything this large means "not set".
const MAX_SANE_LENGTH: u64 = 1 << 20;

/// transformers' pre-tokenizer regex for CLIP (applied to lowercased NFC text).
const CLIP_SPLIT_REGEX: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

pub struct ClipTokenizer {
    tokenizer: Tokenizer,
    max_length: usize,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    pad_token: String,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("max_length", &self.max_length)
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("pad_id", &self.pad_id)
            .field("pad_token", &self.pad_token)
            .finish()
    }
}

impl ClipTokenizer {
    pub fn from_files(files: &TokenizerFiles) -> Result<Self, String> {
        let config = parse_json_object(files.tokenizer_config_json.as_deref(), "tokenizer_config.json")?;
        let special_map = parse_json_object(files.special_tokens_map_json.as_deref(), "special_tokens_map.json")?;

        // Like transformers, tokenizer.json wins over vocab.json + merges.txt when both exist.
        let tokenizer_json = match &files.tokenizer_json {
            Some(bytes) => Some(
                serde_json::from_slice::<Value>(bytes)
                    .map_err(|e| format!("tokenizer/tokenizer.json is not valid JSON ({e})"))?,
            ),
            None => None,
        };
        let (vocab, merges) = match (&tokenizer_json, &files.vocab_json, &files.merges_txt) {
            (Some(tj), _, _) => vocab_and_merges_from_tokenizer_json(tj)?,
            (None, Some(v), Some(m)) => (parse_vocab_json(v)?, parse_merges_txt(m)?),
            (None, Some(_), None) => return Err("tokenizer/: vocab.json is there but merges.txt is missing".into()),
            (None, None, Some(_)) => return Err("tokenizer/: merges.txt is there but vocab.json is missing".into()),
            (None, None, None) => {
                return Err("tokenizer/: no tokenizer files (need tokenizer.json, or vocab.json and merges.txt)".into())
            }
        };
        // A BPE without merges still "works", splitting every word into letters: a truncated
        // or emptied merges file must not pass silently.
        if merges.is_empty() {
            return Err("tokenizer/: the merges list is empty (CLIP's has about 48,900 lines); the file is empty or damaged".into());
        }

        let specials = resolve_special_tokens(config.as_ref(), special_map.as_ref(), tokenizer_json.as_ref())?;
        let max_length = model_max_length(config.as_ref())?;

        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .unk_token(specials.unk.clone())
            .continuing_subword_prefix(String::new())
            .end_of_word_suffix("</w>".into())
            .fuse_unk(false)
            .build()
            .map_err(|e| format!("tokenizer/: vocabulary and merges do not fit together ({e})"))?;

        let mut tokenizer = Tokenizer::new(bpe);
        let regex_err = |e| format!("internal: CLIP tokenizer regex failed to compile ({e})");
        tokenizer.with_normalizer(Some(NormalizerSequence::new(vec![
            NFC.into(),
            Replace::new(tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()), " ")
                .map_err(regex_err)?
                .into(),
            Lowercase.into(),
        ])));
        tokenizer.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
            Split::new(SplitPattern::Regex(CLIP_SPLIT_REGEX.into()), SplitDelimiterBehavior::Removed, true)
                .map_err(regex_err)?
                .into(),
            ByteLevel::new(false, true, true).into(),
        ])));
        tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
        // transformers would give a token missing from the vocabulary a new id past its end,
        // which the text encoder cannot embed: refuse instead.
        let id_of = |token: &str, what: &str| {
            tokenizer.token_to_id(token).ok_or_else(|| {
                format!("tokenizer/: the {what} token {token:?} is not in the vocabulary; check the tokenizer configs")
            })
        };
        let bos_id = id_of(&specials.bos, "bos")?;
        let eos_id = id_of(&specials.eos, "eos")?;
        let pad_id = id_of(&specials.pad, "pad")?;
        // Added after the normalizer so that normalized special tokens are matched on normalized text.
        tokenizer.add_tokens(&specials.added);
        tokenizer.with_post_processor(Some(
            RobertaProcessing::new((specials.eos.clone(), eos_id), (specials.bos.clone(), bos_id))
                .trim_offsets(false)
                .add_prefix_space(false),
        ));

        Ok(ClipTokenizer { tokenizer, max_length, bos_id, eos_id, pad_id, pad_token: specials.pad })
    }

    /// `model_max_length` (77 for SD): the length of every [`Encoded::ids`].
    pub fn max_length(&self) -> usize {
        self.max_length
    }
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }
    pub fn pad_token(&self) -> &str {
        &self.pad_token
    }

    /// The tokens of `text` alone: no start/end tokens, no truncation or padding (what
    /// Automatic1111 tokenizes each piece of a prompt with).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>, String> {
        let enc = self.tokenizer.encode(text, false).map_err(|e| format!("tokenizing the prompt failed: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// A vocabulary entry's id (e.g. ",</w>").
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// bos + all tokens + eos, no truncation or padding.
    pub fn encode_unpadded(&self, text: &str) -> Result<Vec<u32>, String> {
        let enc = self.tokenizer.encode(text, true).map_err(|e| format!("tokenizing the prompt failed: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Like diffusers: `max_length` ids, cut after `max_length - 2` tokens, padded with the pad id.
    pub fn encode_padded(&self, text: &str) -> Result<Encoded, String> {
        let full = self.encode_unpadded(text)?;
        // full = [bos, tokens.., eos]; truncation keeps the specials and drops tokens from the end.
        let n = self.max_length;
        let truncated = full.len() > n;
        let mut ids: Vec<i64> = Vec::with_capacity(n);
        if truncated {
            ids.extend(full[..n - 1].iter().map(|&i| i as i64));
            ids.push(self.eos_id as i64);
        } else {
            ids.extend(full.iter().map(|&i| i as i64));
            ids.resize(n, self.pad_id as i64);
        }
        // diffusers decodes untruncated_ids[max_length - 1 : -1].
        let removed_text = if truncated { Some(self.decode(&full[n - 1..full.len() - 1])?) } else { None };
        Ok(Encoded { ids, truncated, removed_text })
    }

    /// transformers' CLIP decode: byte-level decode, "</w>" to a space, trimmed.
    pub fn decode(&self, ids: &[u32]) -> Result<String, String> {
        let text = self.tokenizer.decode(ids, false).map_err(|e| format!("decoding tokens failed: {e}"))?;
        // Python's str.strip(): Unicode whitespace plus the \x1c-\x1f separators.
        Ok(text
            .replace("</w>", " ")
            .trim_matches(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c))
            .to_string())
    }
}

fn parse_json_object(bytes: Option<&[u8]>, name: &str) -> Result<Option<Map<String, Value>>, String> {
    let Some(bytes) = bytes else { return Ok(None) };
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(Some(m)),
        Ok(_) => Err(format!("tokenizer/{name} is not a JSON object")),
        Err(e) => Err(format!("tokenizer/{name} is not valid JSON ({e})")),
    }
}

fn vocab_from_value(v: &Value, name: &str) -> Result<Vocab, String> {
    let Value::Object(m) = v else {
        return Err(format!("tokenizer/{name}: the vocabulary is not a JSON object of token -> id"));
    };
    let mut vocab = Vocab::with_capacity(m.len());
    for (token, id) in m {
        let id = id
            .as_u64()
            .filter(|&i| i <= u32::MAX as u64)
            .ok_or_else(|| format!("tokenizer/{name}: token {token:?} has id {id}, not a non-negative integer"))?;
        vocab.insert(token.clone(), id as u32);
    }
    if vocab.is_empty() {
        return Err(format!("tokenizer/{name}: the vocabulary is empty"));
    }
    Ok(vocab)
}

fn parse_vocab_json(bytes: &[u8]) -> Result<Vocab, String> {
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("tokenizer/vocab.json is not valid JSON ({e})"))?;
    vocab_from_value(&v, "vocab.json")
}

/// Like tokenizers' reader: "#version" lines skipped, every other line is "left right".
fn parse_merges_txt(bytes: &[u8]) -> Result<Vec<(String, String)>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("tokenizer/merges.txt is not UTF-8 ({e})"))?;
    let mut merges = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("#version") {
            continue;
        }
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), None) => merges.push((a.to_string(), b.to_string())),
            _ => return Err(format!("tokenizer/merges.txt line {}: expected two tokens separated by a space", i + 1)),
        }
    }
    Ok(merges)
}

fn vocab_and_merges_from_tokenizer_json(
    tj: &Value,
) -> Result<(Vocab, Vec<(String, String)>), String> {
    let model = tj.get("model").ok_or("tokenizer/tokenizer.json has no \"model\"")?;
    if let Some(t) = model.get("type").and_then(Value::as_str) {
        if t != "BPE" {
            return Err(format!("tokenizer/tokenizer.json holds a {t} model; CLIP needs BPE"));
        }
    }
    let vocab = vocab_from_value(model.get("vocab").ok_or("tokenizer/tokenizer.json has no model.vocab")?, "tokenizer.json")?;
    let list = model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or("tokenizer/tokenizer.json has no model.merges list")?;
    let mut merges = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        // Two serializations exist: "a b" (older) and ["a", "b"].
        let pair = match m {
            Value::String(s) => {
                let mut p = s.split(' ');
                match (p.next(), p.next(), p.next()) {
                    (Some(a), Some(b), None) => Some((a.to_string(), b.to_string())),
                    _ => None,
                }
            }
            Value::Array(a) if a.len() == 2 => match (a[0].as_str(), a[1].as_str()) {
                (Some(x), Some(y)) => Some((x.to_string(), y.to_string())),
                _ => None,
            },
            _ => None,
        };
        merges.push(pair.ok_or_else(|| format!("tokenizer/tokenizer.json: merge #{i} is not a pair of tokens: {m}"))?);
    }
    Ok((vocab, merges))
}

fn model_max_length(config: Option<&Map<String, Value>>) -> Result<usize, String> {
    let Some(v) = config.and_then(|c| c.get("model_max_length")) else { return Ok(DEFAULT_MAX_LENGTH) };
    // transformers writes 1e30 for "unbounded", which does not fit u64.
    match v.as_u64() {
        Some(n) if n < 2 => Err(format!("tokenizer/tokenizer_config.json: model_max_length {n} leaves no room for bos and eos")),
        Some(n) if n <= MAX_SANE_LENGTH => Ok(n as usize),
        _ if v.is_number() => Ok(DEFAULT_MAX_LENGTH),
        _ => Err(format!("tokenizer/tokenizer_config.json: model_max_length is {v}, not a number")),
    }
}

/// A special-token value as transformers holds it: a plain string or an AddedToken.
/// The two behave differently (a string becomes a non-normalized special token).
#[derive(Clone, PartialEq)]
enum TokenValue {
    Str(String),
    Added(AddedToken),
}

impl TokenValue {
    fn content(&self) -> &str {
        match self {
            TokenValue::Str(s) => s,
            TokenValue::Added(t) => &t.content,
        }
    }
}

/// Python's `AddedToken(**d)`: `normalized` defaults to `not special`.
fn added_token_from_dict(d: &Map<String, Value>, force_special: bool, where_: &str) -> Result<AddedToken, String> {
    let content = d
        .get("content")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("tokenizer/{where_}: a token entry has no \"content\" string"))?;
    let flag = |k: &str| d.get(k).and_then(Value::as_bool);
    let special = force_special || flag("special").unwrap_or(false);
    Ok(AddedToken {
        content: content.to_string(),
        single_word: flag("single_word").unwrap_or(false),
        lstrip: flag("lstrip").unwrap_or(false),
        rstrip: flag("rstrip").unwrap_or(false),
        normalized: flag("normalized").unwrap_or(!special),
        special,
    })
}

fn token_value(v: &Value, force_special: bool, where_: &str) -> Result<Option<TokenValue>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(TokenValue::Str(s.clone()))),
        Value::Object(d) => Ok(Some(TokenValue::Added(added_token_from_dict(d, force_special, where_)?))),
        other => Err(format!("tokenizer/{where_}: a special token is {other}, not a string or token object")),
    }
}

struct SpecialTokens {
    bos: String,
    eos: String,
    unk: String,
    pad: String,
    /// What transformers registers in the backend's added vocabulary, one entry per content.
    added: Vec<AddedToken>,
}

/// transformers' named special tokens, in the order it registers them.
const NAMED: [&str; 7] = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"];

/// Reproduces transformers 5.x `from_pretrained` + `TokenizersBackend.__init__` for the
/// special tokens: which config wins, and the flags each added token ends up with.
fn resolve_special_tokens(
    config: Option<&Map<String, Value>>,
    special_map: Option<&Map<String, Value>>,
    tokenizer_json: Option<&Value>,
) -> Result<SpecialTokens, String> {
    let mut named: Vec<Option<TokenValue>> = vec![None; NAMED.len()];
    if let Some(cfg) = config {
        for (slot, key) in named.iter_mut().zip(NAMED) {
            if let Some(v) = cfg.get(key) {
                *slot = token_value(v, false, "tokenizer_config.json")?;
            }
        }
    }
    let decoder = registered_tokens(config, special_map, tokenizer_json, &mut named)?;

    // Named tokens whose content is a registered added token take that token's flags.
    let by_content: HashMap<&str, &AddedToken> = decoder.iter().map(|(_, t)| (t.content.as_str(), t)).collect();
    for v in named.iter_mut().flatten() {
        if let Some(t) = by_content.get(v.content()) {
            *v = TokenValue::Added((*t).clone());
        }
    }

    // CLIPTokenizer's defaults for what the configs leave out.
    let defaults = [(0, "<|startoftext|>"), (1, "<|endoftext|>"), (2, "<|endoftext|>"), (4, "<|endoftext|>")];
    for (i, d) in defaults {
        if named[i].is_none() {
            named[i] = Some(TokenValue::Str(d.to_string()));
        }
    }
    let added = tokens_to_add(&named, decoder);
    let content = |i: usize| named[i].as_ref().map(|v| v.content().to_string()).unwrap_or_default();
    Ok(SpecialTokens { bos: content(0), eos: content(1), unk: content(2), pad: content(4), added })
}

/// The added tokens the files register, as (id, token) in file order (a later entry with the
/// same id replaces the earlier one): tokenizer_config.json's `added_tokens_decoder`, or in
/// the legacy layout tokenizer.json's `added_tokens` — where special_tokens_map.json also
/// overrides the config's `named` tokens.
fn registered_tokens(
    config: Option<&Map<String, Value>>,
    special_map: Option<&Map<String, Value>>,
    tokenizer_json: Option<&Value>,
    named: &mut [Option<TokenValue>],
) -> Result<Vec<(u64, AddedToken)>, String> {
    let mut decoder: Vec<(u64, AddedToken)> = Vec::new();
    let mut push_decoder = |id: u64, tok: AddedToken| {
        if let Some(e) = decoder.iter_mut().find(|(i, _)| *i == id) {
            e.1 = tok;
        } else {
            decoder.push((id, tok));
        }
    };
    match config.and_then(|c| c.get("added_tokens_decoder")) {
        Some(Value::Object(entries)) => {
            for (id, v) in entries {
                let id: u64 = id
                    .parse()
                    .map_err(|_| format!("tokenizer/tokenizer_config.json: added_tokens_decoder key {id:?} is not an id"))?;
                let Value::Object(d) = v else {
                    return Err("tokenizer/tokenizer_config.json: added_tokens_decoder entries must be objects".into());
                };
                push_decoder(id, added_token_from_dict(d, false, "tokenizer_config.json")?);
            }
        }
        Some(_) => return Err("tokenizer/tokenizer_config.json: added_tokens_decoder is not an object".into()),
        None => {
            // Legacy layout: special_tokens_map.json overrides the config...
            if let Some(map) = special_map {
                for (slot, key) in named.iter_mut().zip(NAMED) {
                    if let Some(v) = map.get(key) {
                        *slot = token_value(v, true, "special_tokens_map.json")?;
                    }
                }
            }
            // ...and tokenizer.json's added_tokens are taken as they are.
            if let Some(list) = tokenizer_json.and_then(|tj| tj.get("added_tokens")) {
                let list = list.as_array().ok_or("tokenizer/tokenizer.json: added_tokens is not a list")?;
                for entry in list {
                    let Value::Object(d) = entry else {
                        return Err("tokenizer/tokenizer.json: added_tokens entries must be objects".into());
                    };
                    let id = d
                        .get("id")
                        .and_then(Value::as_u64)
                        .ok_or("tokenizer/tokenizer.json: an added token has no id")?;
                    push_decoder(id, added_token_from_dict(d, false, "tokenizer.json")?);
                }
            }
        }
    }
    Ok(decoder)
}

/// transformers' tokens_to_add: the registered tokens (by id), then named tokens not yet
/// listed; named ones become special; the last flags given for a content win.
fn tokens_to_add(named: &[Option<TokenValue>], mut decoder: Vec<(u64, AddedToken)>) -> Vec<AddedToken> {
    decoder.sort_by_key(|(id, _)| *id);
    let listed: HashSet<String> = decoder.iter().map(|(_, t)| t.content.clone()).collect();
    let mut to_add: Vec<TokenValue> = decoder.into_iter().map(|(_, t)| TokenValue::Added(t)).collect();
    let n_decoder = to_add.len();
    for v in named.iter().flatten() {
        // Python's `value not in tokens_to_add`: str == str by text, AddedToken by all fields.
        if !listed.contains(v.content()) && !to_add[n_decoder..].contains(v) {
            to_add.push(v.clone());
        }
    }
    let named_contents: HashSet<&str> = named.iter().flatten().map(TokenValue::content).collect();
    let mut added: Vec<AddedToken> = Vec::new();
    for v in to_add {
        let tok = match v {
            TokenValue::Str(s) => AddedToken::from(s, true),
            TokenValue::Added(mut t) => {
                if named_contents.contains(t.content.as_str()) {
                    t.special = true;
                }
                t
            }
        };
        // Python tokenizers keeps the last flags given for a content.
        if let Some(e) = added.iter_mut().find(|e| e.content == tok.content) {
            *e = tok;
        } else {
            added.push(tok);
        }
    }
    added
}
