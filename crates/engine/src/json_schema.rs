//! Structured outputs: a subset of JSON Schema compiled to a byte-level grammar, the
//! sampler's output grammar behind `response_format: {"type": "json_schema"}` and forced tool
//! calls ([`crate::sampler`], step 0).
//!
//! An output matches a [`JsonSchema`] when it is the compact JSON text of a value the schema
//! describes, written one way: object keys exactly as the schema lists them, in its order,
//! each once and none other; `": "` after a key and `", "` between members and items
//! (Python's `json.dumps` layout); no other whitespace. Strings and numbers follow
//! [`crate::json_prefix`]'s rules (UTF-8, escapes, paired surrogates), numbers with at most
//! [`MAX_DIGITS`] digits in the integer part and in the fraction (every integer the model
//! writes fits an i64, integer `enum` values aside; a small model repeating a digit stops
//! there instead of at the token limit). Numbers in `enum` and `const` are written as
//! serde_json writes them (the shortest text of their f64, so `1e2` becomes `100.0` and
//! digits past f64 precision are rounded); integers up to 2^64 stay exact, and other
//! numbers of 2^53 or more are refused. So every complete output parses with common JSON libraries and is an instance of
//! the schema it was compiled from, and a model cannot stall in whitespace.
//!
//! The subset (as OpenAI's strict structured outputs): `type` (one or a list), `properties`,
//! `required` (every listed key must be a property; every property is written, which a schema
//! listing fewer also accepts), `additionalProperties` (none are written), `items`, `enum`,
//! `const` (exact values only), `anyOf` (with nothing structural beside it), `$ref` to the
//! top level's `$defs` or `definitions` (as pydantic writes nested models; not recursive), and
//! the annotations `title`, `description`, `default`, `examples`, `$schema`, `$comment`. Any
//! other keyword (`pattern`, `minimum`, `format`, ...) is refused by name rather than
//! ignored, since the output could then break it. Enum values are matched through one trie;
//! schemas whose alternatives could need more than [`MAX_LIVE`] parses at once are refused.
//!
//! A compiled schema has a canonical text ([`JsonSchema::canonical`]): receipts carry it and
//! [`JsonSchema::from_canonical`] rebuilds the same grammar from it, refusing any other
//! spelling.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::sync::Arc;

use crate::json_prefix::{Lexed, ScalarLex};

/// Largest canonical text of a schema (it travels in every receipt of a run that uses it).
pub const MAX_SCHEMA_BYTES: usize = 16384;
/// Most nodes (types, enum sets, alternatives) in a schema.
pub const MAX_NODES: usize = 1024;
/// Most levels of schemas inside schemas (as written, `$ref`s followed).
pub const MAX_SCHEMA_DEPTH: usize = 16;
/// Deepest nesting of the compiled tree (a list of types and a tool call add levels); the
/// canonical text is read back under the same limit, so whatever compiles decodes.
pub const MAX_NODE_DEPTH: usize = 40;
/// Most digits in a number's integer part, and in its fraction.
pub const MAX_DIGITS: u8 = 18;
/// Most alternative parses followed at once. Schemas whose alternatives could exceed it are
/// refused when compiled; the matcher also keeps at most this many (the first, in schema
/// order), the same on every machine.
pub const MAX_LIVE: usize = 256;

/// A JSON value that keeps object members in document order (a schema's `properties` order is
/// the output's key order).
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    /// Compact JSON text, members in their order.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Number(n) => out.push_str(&n.to_string()),
            Json::String(s) => out.push_str(&quote(s)),
            Json::Array(a) => {
                out.push('[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write(out);
                }
                out.push(']');
            }
            Json::Object(m) => {
                out.push('{');
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&quote(k));
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

impl<'de> serde::Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Json;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_none<E>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
                Json::deserialize(d)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Json, E> {
                Ok(Json::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Json, E> {
                Ok(Json::Number(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Json, E> {
                Ok(Json::Number(n.into()))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Json, E> {
                serde_json::Number::from_f64(n)
                    .map(Json::Number)
                    .ok_or_else(|| E::custom("a number that is not finite"))
            }
            fn visit_str<E>(self, s: &str) -> Result<Json, E> {
                Ok(Json::String(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<Json, E> {
                Ok(Json::String(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Json, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(Json::Array(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Json, A::Error> {
                let mut m: Vec<(String, Json)> = Vec::new();
                let mut seen = std::collections::HashSet::new();
                while let Some((k, v)) = a.next_entry::<String, Json>()? {
                    if !seen.insert(k.clone()) {
                        return Err(de::Error::custom(format!("duplicate key {k:?}")));
                    }
                    m.push((k, v));
                }
                Ok(Json::Object(m))
            }
        }
        d.deserialize_any(V)
    }
}

/// A schema as a tree, before it is laid out for matching.
#[derive(Clone, Debug, PartialEq)]
enum Node {
    Object(Vec<(String, Node)>),
    Array(Box<Node>),
    String,
    Number,
    Integer,
    Boolean,
    Null,
    /// The JSON texts of the allowed values (scalars).
    Enum(Vec<String>),
    AnyOf(Vec<Node>),
    /// At the top level only: a value of the inner node, or free text that does not start
    /// with `{` (a tool call, or a plain answer: `tool_choice: "auto"`).
    OrText(Box<Node>),
}

impl Node {
    fn canonical(&self, out: &mut String) {
        match self {
            Node::String => out.push_str("\"string\""),
            Node::Number => out.push_str("\"number\""),
            Node::Integer => out.push_str("\"integer\""),
            Node::Boolean => out.push_str("\"boolean\""),
            Node::Null => out.push_str("\"null\""),
            Node::Object(fields) => {
                out.push_str("{\"object\":[");
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push('[');
                    out.push_str(&quote(k));
                    out.push(',');
                    v.canonical(out);
                    out.push(']');
                }
                out.push_str("]}");
            }
            Node::Array(item) => {
                out.push_str("{\"array\":");
                item.canonical(out);
                out.push('}');
            }
            Node::Enum(texts) => {
                out.push_str("{\"enum\":[");
                out.push_str(&texts.join(","));
                out.push_str("]}");
            }
            Node::OrText(inner) => {
                out.push_str("{\"orText\":");
                inner.canonical(out);
                out.push('}');
            }
            Node::AnyOf(alts) => {
                out.push_str("{\"anyOf\":[");
                for (i, a) in alts.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    a.canonical(out);
                }
                out.push_str("]}");
            }
        }
    }

    /// Levels of the tree (a leaf is 1).
    fn depth(&self) -> usize {
        1 + match self {
            Node::Object(f) => f.iter().map(|(_, v)| v.depth()).max().unwrap_or(0),
            Node::Array(i) | Node::OrText(i) => i.depth(),
            Node::AnyOf(a) => a.iter().map(Node::depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    /// An upper bound on the parses followed at once while matching this node (each enum is
    /// one trie, so one parse, two where a value is a prefix of another).
    fn live(&self) -> usize {
        match self {
            Node::Object(f) => f.iter().map(|(_, v)| v.live()).max().unwrap_or(1),
            Node::Array(i) => 1 + i.live(),
            Node::AnyOf(a) => a.iter().map(Node::live).sum(),
            Node::OrText(i) => 1 + i.live(),
            // A trie has two parses only where a value ends inside a longer one ("1", "12").
            Node::Enum(texts) => {
                let mut t: Vec<&String> = texts.iter().collect();
                t.sort();
                1 + usize::from(t.windows(2).any(|w| w[1].starts_with(w[0].as_str())))
            }
            _ => 1,
        }
    }

    fn count(&self) -> usize {
        1 + match self {
            Node::Object(f) => f.iter().map(|(_, v)| v.count()).sum(),
            Node::Array(i) | Node::OrText(i) => i.count(),
            Node::AnyOf(a) => a.iter().map(Node::count).sum(),
            _ => 0,
        }
    }

    /// Read back from [`Node::canonical`]'s shape (the caller checks the spelling).
    fn from_canonical(v: &Json, depth: usize) -> Result<Node, String> {
        if depth >= MAX_NODE_DEPTH {
            return Err(format!("nested deeper than {MAX_NODE_DEPTH}"));
        }
        let bad = || format!("not a canonical schema node: {}", v.to_text());
        Ok(match v {
            Json::String(s) => match s.as_str() {
                "string" => Node::String,
                "number" => Node::Number,
                "integer" => Node::Integer,
                "boolean" => Node::Boolean,
                "null" => Node::Null,
                _ => return Err(bad()),
            },
            Json::Object(m) if m.len() == 1 => match (m[0].0.as_str(), &m[0].1) {
                ("object", Json::Array(fields)) => {
                    let mut out: Vec<(String, Node)> = Vec::new();
                    for f in fields {
                        match f {
                            Json::Array(kv) if kv.len() == 2 => {
                                let k = kv[0].as_str().ok_or_else(bad)?;
                                if out.iter().any(|(seen, _)| seen == k) {
                                    return Err(format!("property {k:?} twice"));
                                }
                                out.push((k.to_string(), Node::from_canonical(&kv[1], depth + 1)?));
                            }
                            _ => return Err(bad()),
                        }
                    }
                    Node::Object(out)
                }
                ("array", item) => Node::Array(Box::new(Node::from_canonical(item, depth + 1)?)),
                ("orText", inner) if depth == 0 => {
                    Node::OrText(Box::new(Node::from_canonical(inner, depth + 1)?))
                }
                ("enum", Json::Array(vals)) => enum_node(vals)?,
                ("anyOf", Json::Array(alts)) if alts.len() >= 2 => Node::AnyOf(
                    alts.iter()
                        .map(|a| Node::from_canonical(a, depth + 1))
                        .collect::<Result<_, _>>()?,
                ),
                _ => return Err(bad()),
            },
            _ => return Err(bad()),
        })
    }
}

/// An enum of scalar values: at least one, no repeats.
fn enum_node(vals: &[Json]) -> Result<Node, String> {
    if vals.is_empty() {
        return Err("enum lists no values".into());
    }
    let mut texts: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for v in vals {
        if matches!(v, Json::Array(_) | Json::Object(_)) {
            return Err(format!(
                "enum and const values must be strings, numbers, booleans or null, got {}",
                v.to_text()
            ));
        }
        if let Json::Number(n) = v {
            // Written as serde_json writes it; beyond 2^53 an f64 no longer holds every
            // integer, so the written value could differ from the schema's.
            if n.as_f64()
                .is_some_and(|x| !n.is_i64() && !n.is_u64() && x.abs() >= 9.007e15)
            {
                return Err(format!(
                    "enum and const numbers must be exact (integers up to 2^64, or decimals \
                     below 2^53), got {}",
                    v.to_text()
                ));
            }
        }
        let t = v.to_text();
        if !seen.insert(t.clone()) {
            return Err(format!("enum lists {t} twice"));
        }
        texts.push(t);
    }
    Ok(Node::Enum(texts))
}

const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "$schema",
    "$comment",
];

fn type_matches(ty: &str, v: &Json) -> bool {
    match (ty, v) {
        ("string", Json::String(_)) | ("boolean", Json::Bool(_)) | ("null", Json::Null) => true,
        ("number", Json::Number(_)) => true,
        ("integer", Json::Number(n)) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|x| x.fract() == 0.0)
        }
        _ => false,
    }
}

/// What compiling one schema carries along: the top level (whose `$defs` or `definitions`
/// `$ref`s name), the `$ref`s being expanded (a cycle is refused at once), and a budget of
/// schema nodes (each `$ref` use counts its target again), so a few hundred bytes cannot
/// expand into unbounded work.
struct Ctx<'a> {
    root: &'a Json,
    refs: Vec<String>,
    budget: usize,
}

impl<'a> Ctx<'a> {
    fn new(root: &'a Json) -> Self {
        Ctx {
            root,
            refs: Vec::new(),
            budget: MAX_NODES,
        }
    }
}

/// Compile one JSON Schema node at `path`.
fn from_schema(v: &Json, path: &str, depth: usize, cx: &mut Ctx) -> Result<Node, String> {
    if depth >= MAX_SCHEMA_DEPTH {
        return Err(format!(
            "{path}: schemas nest deeper than {MAX_SCHEMA_DEPTH}"
        ));
    }
    if cx.budget == 0 {
        return Err(format!(
            "the schema has more than {MAX_NODES} nodes (counting each $ref use)"
        ));
    }
    cx.budget -= 1;
    let Json::Object(m) = v else {
        return Err(format!(
            "{path}: a schema must be an object, got {}",
            v.to_text()
        ));
    };
    let known = [
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "const",
        "anyOf",
        "$ref",
        "$defs",
        "definitions",
    ];
    if let Some((k, _)) = m
        .iter()
        .find(|(k, _)| !known.contains(&k.as_str()) && !ANNOTATIONS.contains(&k.as_str()))
    {
        return Err(format!(
            "{path}: the schema keyword {k:?} is not supported (supported: {}; annotations \
             are allowed)",
            known.join(", ")
        ));
    }
    let structural = |allowed: &[&str]| {
        m.iter()
            .map(|(k, _)| k.as_str())
            .find(|k| {
                !allowed.contains(k)
                    && !ANNOTATIONS.contains(k)
                    && !matches!(*k, "$defs" | "definitions")
            })
            .map(str::to_string)
    };
    if let Some(r) = v.get("$ref") {
        if let Some(k) = structural(&["$ref"]) {
            return Err(format!("{path}: {k:?} beside $ref is not supported"));
        }
        let target = r
            .as_str()
            .and_then(|r| {
                [("#/$defs/", "$defs"), ("#/definitions/", "definitions")]
                    .iter()
                    .find_map(|(prefix, key)| Some((r.strip_prefix(prefix)?, *key)))
            })
            .filter(|(name, _)| !name.contains(['/', '~']))
            .and_then(|(name, key)| Some((name, cx.root.get(key)?.get(name)?)));
        let Some((name, target)) = target else {
            return Err(format!(
                "{path}: $ref {} does not name an entry of the top level's $defs",
                r.to_text()
            ));
        };
        if cx.refs.iter().any(|r| r == name) {
            return Err(format!(
                "{path}: $ref {name:?} is recursive, which is not supported"
            ));
        }
        cx.refs.push(name.to_string());
        let node = from_schema(target, &format!("{path}({name})"), depth + 1, cx);
        cx.refs.pop();
        return node;
    }
    if v.get("anyOf").is_some() {
        if let Some(k) = structural(&["anyOf"]) {
            return Err(format!(
                "{path}: {k:?} beside anyOf is not supported (put it in each alternative)"
            ));
        }
    }
    let types: Option<Vec<&str>> = match v.get("type") {
        None => None,
        Some(Json::String(t)) => Some(vec![t.as_str()]),
        Some(Json::Array(ts)) if !ts.is_empty() => Some(
            ts.iter()
                .map(|t| {
                    t.as_str()
                        .ok_or_else(|| format!("{path}: type must list strings"))
                })
                .collect::<Result<_, _>>()?,
        ),
        Some(t) => {
            return Err(format!(
                "{path}: type must be a string or a list, got {}",
                t.to_text()
            ))
        }
    };
    if let Some(alts) = v.get("anyOf") {
        let Json::Array(alts) = alts else {
            return Err(format!("{path}: anyOf must be a list of schemas"));
        };
        if alts.is_empty() {
            return Err(format!("{path}: anyOf lists no schemas"));
        }
        let nodes: Vec<Node> = alts
            .iter()
            .enumerate()
            .map(|(i, a)| from_schema(a, &format!("{path}.anyOf[{i}]"), depth + 1, cx))
            .collect::<Result<_, _>>()?;
        return Ok(if nodes.len() == 1 {
            nodes.into_iter().next().expect("one")
        } else {
            Node::AnyOf(nodes)
        });
    }
    let values = match (v.get("enum"), v.get("const")) {
        (Some(_), Some(_)) => return Err(format!("{path}: both enum and const")),
        (Some(Json::Array(vals)), None) => Some(vals.clone()),
        (Some(_), None) => return Err(format!("{path}: enum must be a list")),
        (None, Some(c)) => Some(vec![c.clone()]),
        (None, None) => None,
    };
    if let Some(vals) = values {
        if let Some(ts) = &types {
            if let Some(bad) = vals.iter().find(|x| !ts.iter().any(|t| type_matches(t, x))) {
                return Err(format!(
                    "{path}: enum value {} is not of type {}",
                    bad.to_text(),
                    ts.join(" or ")
                ));
            }
        }
        return enum_node(&vals).map_err(|e| format!("{path}: {e}"));
    }
    let Some(types) = types else {
        return Err(format!(
            "{path}: a schema needs a type (or enum, const or anyOf)"
        ));
    };
    let mut nodes = Vec::new();
    for t in &types {
        let only = |keys: &[&str]| -> Result<(), String> {
            for k in ["properties", "required", "additionalProperties", "items"] {
                if v.get(k).is_some() && !keys.contains(&k) {
                    return Err(format!("{path}: {k} does not apply to type {t}"));
                }
            }
            Ok(())
        };
        let node = match *t {
            "object" if types.len() == 1 => {
                only(&["properties", "required", "additionalProperties"])?;
                let props: &[(String, Json)] = match v.get("properties") {
                    None => &[],
                    Some(Json::Object(p)) => p,
                    Some(_) => return Err(format!("{path}: properties must be an object")),
                };
                let names: std::collections::HashSet<&str> =
                    props.iter().map(|(k, _)| k.as_str()).collect();
                match v.get("required") {
                    None => {}
                    Some(Json::Array(req)) => {
                        for r in req {
                            let name = r
                                .as_str()
                                .ok_or_else(|| format!("{path}: required must list strings"))?;
                            if !names.contains(name) {
                                return Err(format!(
                                    "{path}: required names {name:?}, which is not a property \
                                     (additional properties are never written)"
                                ));
                            }
                        }
                    }
                    Some(_) => return Err(format!("{path}: required must be a list")),
                }
                match v.get("additionalProperties") {
                    None | Some(Json::Bool(_)) | Some(Json::Object(_)) => {}
                    Some(_) => {
                        return Err(format!(
                            "{path}: additionalProperties must be a boolean or a schema"
                        ))
                    }
                }
                Node::Object(
                    props
                        .iter()
                        .map(|(k, s)| {
                            Ok((
                                k.clone(),
                                from_schema(s, &format!("{path}.{k}"), depth + 1, cx)?,
                            ))
                        })
                        .collect::<Result<_, String>>()?,
                )
            }
            "array" if types.len() == 1 => {
                only(&["items"])?;
                let item = v
                    .get("items")
                    .ok_or_else(|| format!("{path}: an array schema needs items"))?;
                Node::Array(Box::new(from_schema(
                    item,
                    &format!("{path}[]"),
                    depth + 1,
                    cx,
                )?))
            }
            "object" | "array" => {
                return Err(format!(
                    "{path}: type {t} in a list of types is not supported (use anyOf)"
                ))
            }
            "string" | "number" | "integer" | "boolean" | "null" => {
                only(&[])?;
                match *t {
                    "string" => Node::String,
                    "number" => Node::Number,
                    "integer" => Node::Integer,
                    "boolean" => Node::Boolean,
                    _ => Node::Null,
                }
            }
            other => return Err(format!("{path}: unknown type {other:?}")),
        };
        nodes.push(node);
    }
    Ok(if nodes.len() == 1 {
        nodes.pop().expect("one")
    } else {
        Node::AnyOf(nodes)
    })
}

/// Where a literal lies in [`Grammar::lits`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Lit {
    at: u32,
    end: u32,
}

/// A node laid out for matching.
#[derive(Debug)]
enum Rule {
    /// `pieces[0] value[0] pieces[1] ... value[n-1] pieces[n]`.
    Object {
        pieces: Vec<Lit>,
        values: Vec<u32>,
    },
    Array(u32),
    String,
    Number,
    Integer,
    /// One of a set of literal texts (enum values, booleans, null): the root of their trie.
    Trie(u32),
    AnyOf(Vec<u32>),
    OrText(u32),
}

/// A node of a literal set's trie: one edge per next byte, `terminal` where a value ends.
#[derive(Debug, Default)]
struct TrieNode {
    edges: Vec<(u8, u32)>,
    terminal: bool,
}

#[derive(Debug)]
struct Grammar {
    rules: Vec<Rule>,
    lits: Vec<u8>,
    trie: Vec<TrieNode>,
    root: u32,
    open_bracket: Lit,
    close_bracket: Lit,
    comma: Lit,
    quote: Lit,
}

impl Grammar {
    fn lit(&mut self, bytes: &[u8]) -> Lit {
        let at = self.lits.len() as u32;
        self.lits.extend_from_slice(bytes);
        Lit {
            at,
            end: self.lits.len() as u32,
        }
    }

    fn build(node: &Node) -> Grammar {
        let mut g = Grammar {
            rules: Vec::new(),
            lits: Vec::new(),
            trie: Vec::new(),
            root: 0,
            open_bracket: Lit { at: 0, end: 0 },
            close_bracket: Lit { at: 0, end: 0 },
            comma: Lit { at: 0, end: 0 },
            quote: Lit { at: 0, end: 0 },
        };
        g.open_bracket = g.lit(b"[");
        g.close_bracket = g.lit(b"]");
        g.comma = g.lit(b", ");
        g.quote = g.lit(b"\"");
        g.root = g.add(node);
        g
    }

    /// The trie of `texts` (none empty): its root's index.
    fn trie_of<S: AsRef<str>>(&mut self, texts: &[S]) -> u32 {
        let root = self.trie.len() as u32;
        self.trie.push(TrieNode::default());
        for t in texts {
            let mut at = root;
            for &b in t.as_ref().as_bytes() {
                let next = self.trie[at as usize]
                    .edges
                    .iter()
                    .find(|(c, _)| *c == b)
                    .map(|(_, n)| *n);
                at = match next {
                    Some(n) => n,
                    None => {
                        let n = self.trie.len() as u32;
                        self.trie.push(TrieNode::default());
                        self.trie[at as usize].edges.push((b, n));
                        n
                    }
                };
            }
            self.trie[at as usize].terminal = true;
        }
        root
    }

    fn add(&mut self, node: &Node) -> u32 {
        let rule = match node {
            Node::Object(fields) => {
                let mut pieces = Vec::with_capacity(fields.len() + 1);
                let mut values = Vec::with_capacity(fields.len());
                if fields.is_empty() {
                    pieces.push(self.lit(b"{}"));
                }
                for (i, (k, v)) in fields.iter().enumerate() {
                    let lead = if i == 0 { "{" } else { ", " };
                    pieces.push(self.lit(format!("{lead}{}: ", quote(k)).as_bytes()));
                    values.push(self.add(v));
                }
                if !fields.is_empty() {
                    pieces.push(self.lit(b"}"));
                }
                Rule::Object { pieces, values }
            }
            Node::Array(item) => Rule::Array(self.add(item)),
            Node::String => Rule::String,
            Node::Number => Rule::Number,
            Node::Integer => Rule::Integer,
            Node::Boolean => Rule::Trie(self.trie_of(&["true", "false"])),
            Node::Null => Rule::Trie(self.trie_of(&["null"])),
            Node::Enum(texts) => Rule::Trie(self.trie_of(texts)),
            Node::AnyOf(alts) => Rule::AnyOf(alts.iter().map(|a| self.add(a)).collect()),
            Node::OrText(inner) => Rule::OrText(self.add(inner)),
        };
        self.rules.push(rule);
        (self.rules.len() - 1) as u32
    }
}

/// What remains to be matched, innermost last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Goal {
    Lit(Lit),
    Value(u32),
    /// After an array's `[`: `]` or an item.
    ArrayFirst(u32),
    /// After an item: `]`, or `, ` and another item.
    ArrayNext(u32),
    Scalar {
        integer: bool,
        lex: ScalarLex,
    },
    /// Inside one of a set of literals, at this trie node.
    Trie(u32),
    /// Free text, before its first byte (which may not be `{`).
    TextFirst,
    /// Free text: any byte, complete at any point.
    Text,
}

/// A compiled schema: cheap to clone, compared by its canonical text.
#[derive(Clone)]
pub struct JsonSchema {
    canonical: Arc<str>,
    grammar: Arc<Grammar>,
}

impl PartialEq for JsonSchema {
    fn eq(&self, other: &Self) -> bool {
        self.canonical == other.canonical
    }
}

impl fmt::Debug for JsonSchema {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "JsonSchema({})", self.canonical)
    }
}

/// Where an output stands against a schema: the parses still alive (empty stacks are complete
/// ones).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SchemaState {
    stacks: Vec<Vec<Goal>>,
}

impl JsonSchema {
    fn from_node(node: Node) -> Result<Self, String> {
        if node.count() > MAX_NODES {
            return Err(format!("the schema has more than {MAX_NODES} nodes"));
        }
        if node.depth() > MAX_NODE_DEPTH {
            return Err(format!(
                "the schema nests deeper than {MAX_NODE_DEPTH} levels once compiled"
            ));
        }
        if node.live() > MAX_LIVE {
            return Err(format!(
                "the schema's alternatives (anyOf, lists of types, arrays of them) allow more \
                 than {MAX_LIVE} parses at once"
            ));
        }
        let mut canonical = String::new();
        node.canonical(&mut canonical);
        if canonical.len() > MAX_SCHEMA_BYTES {
            return Err(format!(
                "the schema's canonical form is {} bytes, at most {MAX_SCHEMA_BYTES} are allowed",
                canonical.len()
            ));
        }
        Ok(JsonSchema {
            grammar: Arc::new(Grammar::build(&node)),
            canonical: canonical.into(),
        })
    }

    /// Compile a JSON Schema (the supported subset, module doc).
    pub fn compile(schema: &Json) -> Result<Self, String> {
        Self::from_node(from_schema(schema, "schema", 0, &mut Ctx::new(schema))?)
    }

    /// Compile a JSON Schema whose top level must be an object (`response_format` and tool
    /// parameters).
    pub fn compile_object(schema: &Json) -> Result<Self, String> {
        let node = from_schema(schema, "schema", 0, &mut Ctx::new(schema))?;
        if !matches!(node, Node::Object(_)) {
            return Err("the schema's top level must be of type object".into());
        }
        Self::from_node(node)
    }

    /// A tool call: `{"name": <one of the names>, "arguments": <that tool's parameters>}`, one
    /// alternative per `(name, parameters)`.
    pub fn tool_calls(tools: &[(String, Json)]) -> Result<Self, String> {
        Self::from_node(Self::tool_call_node(tools)?)
    }

    /// A tool call as [`Self::tool_calls`], or free text whose first byte is not `{` (the
    /// model chooses with its first token: `tool_choice: "auto"`).
    pub fn tool_calls_or_text(tools: &[(String, Json)]) -> Result<Self, String> {
        Self::from_node(Node::OrText(Box::new(Self::tool_call_node(tools)?)))
    }

    fn tool_call_node(tools: &[(String, Json)]) -> Result<Node, String> {
        let mut alts = Vec::new();
        for (name, params) in tools {
            let args = from_schema(
                params,
                &format!("{name}.parameters"),
                0,
                &mut Ctx::new(params),
            )?;
            if !matches!(args, Node::Object(_)) {
                return Err(format!("tool {name:?}: parameters must be of type object"));
            }
            alts.push(Node::Object(vec![
                ("name".into(), Node::Enum(vec![quote(name)])),
                ("arguments".into(), args),
            ]));
        }
        match alts.len() {
            0 => Err("no tools".into()),
            1 => Ok(alts.pop().expect("one")),
            _ => Ok(Node::AnyOf(alts)),
        }
    }

    /// Rebuild from [`Self::canonical`]; any other spelling is refused.
    pub fn from_canonical(text: &str) -> Result<Self, String> {
        if text.len() > MAX_SCHEMA_BYTES {
            return Err(format!("canonical schema over {MAX_SCHEMA_BYTES} bytes"));
        }
        let v: Json = serde_json::from_str(text).map_err(|e| format!("canonical schema: {e}"))?;
        let s = Self::from_node(Node::from_canonical(&v, 0)?)?;
        if &*s.canonical != text {
            return Err("schema text is not in canonical form".into());
        }
        Ok(s)
    }

    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// The empty output.
    pub fn start(&self) -> SchemaState {
        let mut stacks = Vec::new();
        self.expand(vec![Goal::Value(self.grammar.root)], &mut stacks);
        SchemaState { stacks }
    }

    /// Whether the output so far is a whole value of the schema.
    pub fn is_complete(&self, s: &SchemaState) -> bool {
        s.stacks.iter().any(|st| match st.as_slice() {
            [] | [Goal::Text] | [Goal::TextFirst] => true,
            [Goal::Scalar { lex, .. }] => lex.number_complete(),
            _ => false,
        })
    }

    /// The state after `bytes`, or `None` if no continuation makes the output match.
    pub fn after(&self, s: &SchemaState, bytes: &[u8]) -> Option<SchemaState> {
        let mut cur = s.stacks.clone();
        for &b in bytes {
            let mut next = Vec::new();
            for st in cur {
                self.step(st, b, &mut next);
            }
            if next.is_empty() {
                return None;
            }
            cur = next;
        }
        Some(SchemaState { stacks: cur })
    }

    /// Whether some continuation of the output plus `bytes` matches; allocates only when
    /// `bytes` finish the innermost goal of a parse.
    pub fn accepts(&self, s: &SchemaState, bytes: &[u8]) -> bool {
        if let [st] = s.stacks.as_slice() {
            if let Some(top) = st.last() {
                if let Some(fits) = self.within(*top, bytes) {
                    return fits;
                }
            }
        }
        self.after(s, bytes).is_some()
    }

    /// `Some(fits)` when `bytes` stay inside the goal `top` without finishing it (or fail in
    /// it); `None` when the answer depends on what follows it.
    fn within(&self, top: Goal, bytes: &[u8]) -> Option<bool> {
        match top {
            Goal::Lit(l) => {
                let rest = &self.grammar.lits[l.at as usize..l.end as usize];
                if bytes.len() < rest.len() {
                    Some(rest.starts_with(bytes))
                } else {
                    None
                }
            }
            Goal::Scalar { integer, mut lex } => {
                for &b in bytes {
                    if integer && matches!(b, b'.' | b'e' | b'E') {
                        return Some(false);
                    }
                    match lex.step(b) {
                        Lexed::More(l) if l.digits() > MAX_DIGITS => return Some(false),
                        Lexed::More(l) => lex = l,
                        Lexed::Fail => return Some(false),
                        Lexed::Closed | Lexed::Ended => return None,
                    }
                }
                Some(true)
            }
            Goal::Trie(mut n) => {
                for &b in bytes {
                    let node = &self.grammar.trie[n as usize];
                    if node.terminal {
                        return None; // a value may end here: it depends on what follows
                    }
                    match node.edges.iter().find(|(c, _)| *c == b) {
                        Some(&(_, next)) => n = next,
                        None => return Some(false),
                    }
                }
                (!self.grammar.trie[n as usize].terminal).then_some(true)
            }
            Goal::Text => Some(true),
            Goal::TextFirst => Some(bytes.first() != Some(&b'{')),
            _ => None,
        }
    }

    /// Resolve the goals on top of `st` until one consumes a byte, pushing each resulting
    /// parse to `out` (alternatives in schema order; repeats and parses past [`MAX_LIVE`]
    /// dropped).
    fn expand(&self, mut st: Vec<Goal>, out: &mut Vec<Vec<Goal>>) {
        let g = &*self.grammar;
        while let Some(&top) = st.last() {
            match top {
                Goal::Lit(_)
                | Goal::Scalar { .. }
                | Goal::Trie(_)
                | Goal::Text
                | Goal::TextFirst => break,
                Goal::Value(r) => {
                    st.pop();
                    match &g.rules[r as usize] {
                        Rule::Object { pieces, values } => {
                            st.push(Goal::Lit(pieces[values.len()]));
                            for i in (0..values.len()).rev() {
                                st.push(Goal::Value(values[i]));
                                st.push(Goal::Lit(pieces[i]));
                            }
                        }
                        Rule::Array(item) => {
                            st.push(Goal::ArrayFirst(*item));
                            st.push(Goal::Lit(g.open_bracket));
                        }
                        Rule::String => {
                            st.push(Goal::Scalar {
                                integer: false,
                                lex: ScalarLex::string(),
                            });
                            st.push(Goal::Lit(g.quote));
                        }
                        Rule::Number | Rule::Integer => st.push(Goal::Scalar {
                            integer: matches!(g.rules[r as usize], Rule::Integer),
                            lex: ScalarLex::number(),
                        }),
                        Rule::Trie(root) => st.push(Goal::Trie(*root)),
                        Rule::OrText(inner) => {
                            let mut value = st.clone();
                            value.push(Goal::Value(*inner));
                            self.expand(value, out);
                            st.push(Goal::TextFirst);
                        }
                        Rule::AnyOf(alts) => {
                            for a in alts {
                                let mut alt = st.clone();
                                alt.push(Goal::Value(*a));
                                self.expand(alt, out);
                            }
                            return;
                        }
                    }
                }
                Goal::ArrayFirst(item) | Goal::ArrayNext(item) => {
                    st.pop();
                    let mut close = st.clone();
                    close.push(Goal::Lit(g.close_bracket));
                    self.expand(close, out);
                    st.push(Goal::ArrayNext(item));
                    st.push(Goal::Value(item));
                    if matches!(top, Goal::ArrayNext(_)) {
                        st.push(Goal::Lit(g.comma));
                    }
                }
            }
        }
        if out.len() < MAX_LIVE && !out.contains(&st) {
            out.push(st);
        }
    }

    /// Feed `b` to the parse `st`, pushing what survives to `out`.
    fn step(&self, mut st: Vec<Goal>, b: u8, out: &mut Vec<Vec<Goal>>) {
        let Some(top) = st.last_mut() else {
            return; // complete: nothing may follow
        };
        match top {
            Goal::Lit(l) => {
                if self.grammar.lits[l.at as usize] != b {
                    return;
                }
                l.at += 1;
                if l.at == l.end {
                    st.pop();
                }
                self.expand(st, out);
            }
            Goal::Scalar { integer, lex } => {
                if *integer && matches!(b, b'.' | b'e' | b'E') {
                    return;
                }
                match lex.step(b) {
                    Lexed::More(l) if l.digits() > MAX_DIGITS => {}
                    Lexed::More(l) => {
                        *lex = l;
                        if out.len() < MAX_LIVE && !out.contains(&st) {
                            out.push(st);
                        }
                    }
                    Lexed::Closed => {
                        st.pop();
                        self.expand(st, out);
                    }
                    Lexed::Ended => {
                        st.pop();
                        let mut after = Vec::new();
                        self.expand(st, &mut after);
                        for a in after {
                            self.step(a, b, out);
                        }
                    }
                    Lexed::Fail => {}
                }
            }
            Goal::Trie(n) => {
                let trie = &self.grammar.trie;
                let Some(&(_, next)) = trie[*n as usize].edges.iter().find(|(c, _)| *c == b) else {
                    return;
                };
                let node = &trie[next as usize];
                if node.terminal {
                    // The value may end here (and, if a longer one shares this prefix, go on).
                    let mut done = st.clone();
                    done.pop();
                    self.expand(done, out);
                }
                if !node.edges.is_empty() {
                    if let Some(top) = st.last_mut() {
                        *top = Goal::Trie(next);
                    }
                    if out.len() < MAX_LIVE && !out.contains(&st) {
                        out.push(st);
                    }
                }
            }
            Goal::Text => {
                if !out.contains(&st) {
                    out.push(st);
                }
            }
            Goal::TextFirst => {
                if b != b'{' {
                    *top = Goal::Text;
                    if !out.contains(&st) {
                        out.push(st);
                    }
                }
            }
            // `expand` leaves only byte-consuming goals on top.
            Goal::Value(_) | Goal::ArrayFirst(_) | Goal::ArrayNext(_) => {
                debug_assert!(false, "unexpanded goal");
            }
        }
    }
}

impl serde::Serialize for JsonSchema {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.canonical)
    }
}

impl<'de> serde::Deserialize<'de> for JsonSchema {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        JsonSchema::from_canonical(&text).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha8Rng;
    use rand_core::{RngCore, SeedableRng};

    fn json(text: &str) -> Json {
        serde_json::from_str(text).expect("test JSON")
    }

    fn schema(text: &str) -> JsonSchema {
        JsonSchema::compile(&json(text)).expect("schema compiles")
    }

    fn complete(s: &JsonSchema, out: &str) -> bool {
        s.after(&s.start(), out.as_bytes())
            .is_some_and(|st| s.is_complete(&st))
    }

    fn prefix(s: &JsonSchema, out: &str) -> bool {
        s.after(&s.start(), out.as_bytes()).is_some()
    }

    const PERSON: &str = r#"{
        "type": "object",
        "title": "person",
        "properties": {
            "name": {"type": "string", "description": "full name"},
            "age": {"type": "integer"},
            "height": {"type": ["number", "null"]},
            "tags": {"type": "array", "items": {"enum": ["a", "b", 3, true, null]}},
            "pet": {"anyOf": [
                {"type": "object", "properties": {"kind": {"const": "cat"}, "lives": {"type": "integer"}}},
                {"type": "object", "properties": {"kind": {"const": "dog"}}},
                {"type": "null"}
            ]},
            "ok": {"type": "boolean"},
            "empty": {"type": "object"}
        },
        "required": ["name", "age"],
        "additionalProperties": false
    }"#;

    #[test]
    fn outputs_of_the_schema_are_complete_and_each_prefix_is_a_prefix() {
        let s = schema(PERSON);
        let good = [
            r#"{"name": "Ada", "age": 36, "height": 1.65, "tags": [], "pet": null, "ok": true, "empty": {}}"#,
            r#"{"name": "B\"\u00e9\ud83d\ude00", "age": -0, "height": null, "tags": ["a", 3, null, true, "b"], "pet": {"kind": "cat", "lives": 9}, "ok": false, "empty": {}}"#,
            r#"{"name": "", "age": 123456789012345678, "height": -2.5e-3, "tags": ["b"], "pet": {"kind": "dog"}, "ok": true, "empty": {}}"#,
        ];
        for g in good {
            assert!(complete(&s, g), "{g}");
            let v: serde_json::Value = serde_json::from_str(g).expect("output parses");
            assert!(v.is_object());
            for i in 0..g.len() {
                assert!(prefix(&s, &g[..i]), "prefix {:?} of {g}", &g[..i]);
                assert!(!complete(&s, &g[..i]), "{:?} complete", &g[..i]);
            }
            // Nothing may follow a complete output.
            assert!(!prefix(&s, &format!("{g} ")));
            assert!(!prefix(&s, &format!("{g}}}")));
        }
    }

    #[test]
    fn outputs_that_break_the_schema_or_its_layout_are_refused() {
        let s = schema(PERSON);
        let bad = [
            // key order, missing and unknown keys
            r#"{"age": 1"#,
            r#"{"name": "x", "height""#,
            r#"{"nme"#,
            r#"{"name": "x", "age": 1, "extra""#,
            // layout: whitespace and separators are fixed
            r#"{ "name""#,
            r#"{"name":"x""#,
            r#"{"name": "x","age""#,
            r#"{"name": "x" , "#,
            // types
            r#"{"name": 5"#,
            r#"{"name": "x", "age": 1.5"#,
            r#"{"name": "x", "age": 1e3"#,
            r#"{"name": "x", "age": "1""#,
            r#"{"name": "x", "age": 01"#,
            r#"{"name": "x", "age": 1, "height": true"#,
            r#"{"name": "x", "age": 1, "height": 1, "tags": ["c""#,
            r#"{"name": "x", "age": 1, "height": 1, "tags": [4"#,
            r#"{"name": "x", "age": 1, "height": 1, "tags": [false"#,
            r#"{"name": "x", "age": 1, "height": 1, "tags": [], "pet": {"kind": "cow""#,
            r#"{"name": "x", "age": 1, "height": 1, "tags": [], "pet": {"kind": "dog", "lives""#,
            r#"{"name": "x", "age": 1, "height": 1, "tags": [], "pet": null, "ok": 1"#,
            r#"{"name": "x", "age": 1, "height": 1, "tags": [], "pet": null, "ok": true, "empty": {"a"#,
            // strings: raw control characters, lone surrogates, bad escapes
            "{\"name\": \"a\nb",
            r#"{"name": "\udc00"#,
            r#"{"name": "\x"#,
        ];
        for b in bad {
            assert!(!prefix(&s, b), "accepted {b}");
        }
        // An unfinished number is not complete; a finished one may end the value.
        let num = schema(r#"{"type": "object", "properties": {"x": {"type": "number"}}}"#);
        assert!(!prefix(&num, r#"{"x": -}"#));
        assert!(!prefix(&num, r#"{"x": 1.}"#));
        assert!(!prefix(&num, r#"{"x": 1e}"#));
        assert!(complete(&num, r#"{"x": 1e5}"#));
        assert!(prefix(&num, &format!("{{\"x\": 1{}", "0".repeat(17))));
        assert!(!prefix(&num, &format!("{{\"x\": 1{}", "0".repeat(18))));
        assert!(complete(&num, &format!("{{\"x\": -0.{}}}", "5".repeat(18))));
        assert!(!prefix(&num, &format!("{{\"x\": 0.{}", "5".repeat(19))));
        let int = schema(r#"{"type": "object", "properties": {"n": {"type": "integer"}}}"#);
        let max = format!("{{\"n\": -{}}}", "9".repeat(18));
        assert!(complete(&int, &max));
        let v: serde_json::Value = serde_json::from_str(&max).unwrap();
        assert!(v["n"].is_i64(), "{max}");
    }

    #[test]
    fn unsupported_keywords_and_inconsistent_schemas_are_refused_by_name() {
        let cases = [
            (r#"{"type": "string", "pattern": "a+"}"#, "\"pattern\""),
            (
                r##"{"type": "object", "properties": {"a": {"$ref": "#/x"}}}"##,
                "does not name",
            ),
            (r#"{"type": "integer", "minimum": 0}"#, "\"minimum\""),
            (r#"{"type": "array"}"#, "needs items"),
            (r#"{"description": "x"}"#, "needs a type"),
            (
                r#"{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]}"#,
                "\"b\"",
            ),
            (r#"{"type": "string", "enum": ["a", 1]}"#, "enum value 1"),
            (r#"{"enum": ["a", "a"]}"#, "twice"),
            (r#"{"enum": [[1]]}"#, "must be strings"),
            (r#"{"type": "strin"}"#, "unknown type"),
            (r#"{"type": ["object", "null"]}"#, "use anyOf"),
            (
                r#"{"type": "string", "items": {"type": "string"}}"#,
                "items does not apply",
            ),
            (r#"{"anyOf": []}"#, "no schemas"),
            (
                r#"{"type": "string", "anyOf": [{"type": "null"}]}"#,
                "beside anyOf",
            ),
            ("true", "must be an object"),
        ];
        for (text, needle) in cases {
            let e = JsonSchema::compile(&json(text)).expect_err(text);
            assert!(e.contains(needle), "{text}: {e}");
        }
        // Limits: nesting depth and size.
        let mut deep = r#"{"type": "string"}"#.to_string();
        for _ in 0..=MAX_SCHEMA_DEPTH {
            deep = format!(r#"{{"type": "array", "items": {deep}}}"#);
        }
        assert!(JsonSchema::compile(&json(&deep))
            .unwrap_err()
            .contains("deeper"));
        let wide: Vec<String> = (0..1100)
            .map(|i| format!(r#""k{i}": {{"type": "null"}}"#))
            .collect();
        let wide = format!(
            r#"{{"type": "object", "properties": {{{}}}}}"#,
            wide.join(",")
        );
        assert!(JsonSchema::compile(&json(&wide))
            .unwrap_err()
            .contains("nodes"));
        let long = format!(
            r#"{{"type": "object", "properties": {{"{}": {{"type": "null"}}}}}}"#,
            "k".repeat(17000)
        );
        assert!(JsonSchema::compile(&json(&long))
            .unwrap_err()
            .contains("bytes"));
        // The top level of response formats and tool parameters must be an object.
        assert!(JsonSchema::compile_object(&json(r#"{"type": "string"}"#)).is_err());
        assert!(JsonSchema::tool_calls(&[(
            "f".into(),
            json(r#"{"type": "array", "items": {"type": "null"}}"#)
        )])
        .is_err());
    }

    #[test]
    fn the_canonical_text_rebuilds_the_same_grammar_and_nothing_else_is_accepted() {
        let s = schema(PERSON);
        let back = JsonSchema::from_canonical(s.canonical()).expect("canonical");
        assert_eq!(back, s);
        let out = r#"{"name": "Ada", "age": 36, "height": null, "tags": [true], "pet": {"kind": "cat", "lives": 1}, "ok": true, "empty": {}}"#;
        assert!(complete(&back, out));
        // Annotations and `required` do not change the grammar, so not its text either.
        let plain = schema(
            &PERSON
                .replace(r#""title": "person","#, "")
                .replace(r#""required": ["name", "age"],"#, ""),
        );
        assert_eq!(plain.canonical(), s.canonical());
        // Key order does.
        let swapped = schema(
            r#"{"type": "object", "properties": {"b": {"type": "null"}, "a": {"type": "null"}}}"#,
        );
        assert!(swapped.canonical().find("\"b\"") < swapped.canonical().find("\"a\""));
        let c = s.canonical();
        for other in [
            format!(" {c}"),
            c.replacen(',', ", ", 1),
            c.replacen("\"string\"", "\"String\"", 1),
            c.replacen("{\"object\":", "{\"object\" :", 1),
            c.replace("\"number\"", "{\"anyOf\":[\"number\"]}"),
            "{\"enum\":[]}".into(),
            "{\"object\":[[\"a\",\"null\"],[\"a\",\"null\"]]}".into(),
            "{\"enum\":[\"a\"],\"x\":1}".into(),
            "\"any\"".into(),
            "{\"enum\":[1.0]}".replace("1.0", "1.00"),
        ] {
            assert!(
                JsonSchema::from_canonical(&other).is_err(),
                "accepted {other}"
            );
        }
        // Serde goes through the canonical text.
        let v = serde_json::to_string(&s).unwrap();
        let d: JsonSchema = serde_json::from_str(&v).unwrap();
        assert_eq!(d, s);
        assert!(serde_json::from_str::<JsonSchema>("\"{\\\"enum\\\":[ 1]}\"").is_err());
    }

    #[test]
    fn tool_calls_name_one_tool_and_match_its_parameters() {
        let tools = vec![
            (
                "get_weather".to_string(),
                json(
                    r#"{"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}}, "required": ["city", "unit"]}"#,
                ),
            ),
            (
                "get_time".to_string(),
                json(r#"{"type": "object", "properties": {"zone": {"type": "string"}}}"#),
            ),
        ];
        let s = JsonSchema::tool_calls(&tools).unwrap();
        assert!(complete(
            &s,
            r#"{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}"#
        ));
        assert!(complete(
            &s,
            r#"{"name": "get_time", "arguments": {"zone": "CET"}}"#
        ));
        assert!(!prefix(&s, r#"{"name": "get_time", "arguments": {"city""#));
        assert!(!prefix(&s, r#"{"name": "get_date""#));
        assert!(!prefix(&s, r#"{"arguments""#));
        // Both tools' parses are alive while the name is ambiguous.
        let st = s.after(&s.start(), br#"{"name": "get_"#).unwrap();
        assert_eq!(st.stacks.len(), 2);
    }

    #[test]
    fn auto_tool_choice_is_a_tool_call_or_text_that_does_not_start_with_a_brace() {
        let tools = vec![(
            "get_time".to_string(),
            json(r#"{"type": "object", "properties": {"zone": {"type": "string"}}}"#),
        )];
        let s = JsonSchema::tool_calls_or_text(&tools).unwrap();
        // Empty and plain answers are complete at every point.
        assert!(complete(&s, ""));
        for text in ["It is noon.", "[not json", "\n{\"name\""] {
            for i in 1..=text.len() {
                assert!(complete(&s, &text[..i]), "{:?}", &text[..i]);
            }
        }
        // A leading brace commits to a tool call.
        assert!(complete(
            &s,
            r#"{"name": "get_time", "arguments": {"zone": "UTC"}}"#
        ));
        assert!(!complete(&s, r#"{"name": "get_time""#));
        assert!(!prefix(&s, r#"{"nam3"#));
        assert!(!prefix(
            &s,
            r#"{"name": "get_time", "arguments": {"zone": "UTC"}} and"#
        ));
        // The fast path agrees once one parse is left.
        let st = s.after(&s.start(), b"I").unwrap();
        assert!(s.accepts(&st, b"{\"x"));
        let st = s.after(&s.start(), b"{").unwrap();
        assert!(!s.accepts(&st, b"x"));
        // Canonical text: only at the top level.
        let c = s.canonical();
        assert!(c.starts_with(r#"{"orText":"#), "{c}");
        assert_eq!(JsonSchema::from_canonical(c).unwrap(), s);
        assert!(JsonSchema::from_canonical(&format!(r#"{{"array":{c}}}"#)).is_err());
        assert!(JsonSchema::from_canonical(&format!(r#"{{"orText":{c}}}"#)).is_err());
    }

    #[test]
    fn refs_large_enums_and_the_limit_on_alternatives() {
        // A nested model as pydantic writes it: `$defs` at the top, `$ref`s to them.
        let s = schema(
            r##"{"$defs": {"Pet": {"type": "object", "title": "Pet",
                "properties": {"kind": {"enum": ["cat", "dog"]}}}},
                "type": "object", "properties": {"pet": {"$ref": "#/$defs/Pet"},
                "pets": {"type": "array", "items": {"$ref": "#/$defs/Pet"}}}}"##,
        );
        assert!(complete(
            &s,
            r#"{"pet": {"kind": "cat"}, "pets": [{"kind": "dog"}]}"#
        ));
        for (text, says) in [
            (
                r##"{"$defs": {"N": {"type": "object", "properties": {"next": {"$ref": "#/$defs/N"}}}}, "$ref": "#/$defs/N"}"##,
                "recursive",
            ),
            (r##"{"$ref": "#/$defs/Missing"}"##, "does not name"),
            (
                r##"{"$defs": {"A": {"type": "null"}}, "$ref": "#/$defs/A", "type": "null"}"##,
                "beside $ref",
            ),
            (
                r#"{"anyOf": [{"type": "null"}], "properties": {"a": {"type": "null"}}}"#,
                "beside anyOf",
            ),
            (r#"{"enum": [12345678901234567890123]}"#, "must be exact"),
        ] {
            let e = JsonSchema::compile(&json(text)).expect_err(text);
            assert!(e.contains(says), "{text}: {e}");
        }
        // A $ref fan-out (each entry naming the next ten times, 6 deep: a million uses) is
        // refused by the
        // node budget instead of being expanded.
        let mut defs: Vec<String> = (0..6)
            .map(|i| {
                let props: Vec<String> = (0..10)
                    .map(|j| format!(r##""p{j}": {{"$ref": "#/$defs/D{}"}}"##, i + 1))
                    .collect();
                format!(
                    r#""D{i}": {{"type": "object", "properties": {{{}}}}}"#,
                    props.join(", ")
                )
            })
            .collect();
        defs.push(r#""D6": {"type": "null"}"#.into());
        let fan = format!(
            r##"{{"$defs": {{{}}}, "$ref": "#/$defs/D0"}}"##,
            defs.join(", ")
        );
        let e = JsonSchema::compile(&json(&fan)).unwrap_err();
        assert!(e.contains("nodes"), "{e}");
        // 32 tools (the gateway's most) under "auto" stay within the parses followed at once.
        let tools: Vec<(String, Json)> = (0..32)
            .map(|i| {
                let p = r#"{"type": "object", "properties": {"x": {"type": ["string", "null"]}, "ok": {"type": "boolean"}}}"#;
                (format!("tool_{i}"), json(p))
            })
            .collect();
        let t = JsonSchema::tool_calls_or_text(&tools).unwrap();
        let call = r#"{"name": "tool_31", "arguments": {"x": null, "ok": true}}"#;
        assert!(complete(&t, call));
        // An integral decimal is an integer, as JSON Schema says.
        assert!(JsonSchema::compile(&json(r#"{"type": "integer", "enum": [1e2]}"#)).is_ok());
        // Every value of a large enum, inside an array (one trie, not a parse per value).
        let vals: Vec<String> = (0..100).map(|i| format!("\"v{i}\"")).collect();
        let e = schema(&format!(
            r#"{{"type": "object", "properties": {{"a": {{"type": "array", "items": {{"enum": [{}]}}}}}}}}"#,
            vals.join(", ")
        ));
        for i in [0, 9, 10, 63, 64, 99] {
            assert!(
                complete(&e, &format!(r#"{{"a": ["v{i}", "v{i}"]}}"#)),
                "v{i}"
            );
        }
        assert!(!prefix(&e, r#"{"a": ["v100"#));
        assert!(!prefix(&e, r#"{"a": ["w"#));
        // Values that are prefixes of others.
        let n = schema(
            r#"{"type": "object", "properties": {"a": {"type": "array", "items": {"enum": [1, 12, 123]}}}}"#,
        );
        assert!(complete(&n, r#"{"a": [1, 12, 123, 1]}"#));
        assert!(!prefix(&n, r#"{"a": [13"#));
        assert!(!prefix(&n, r#"{"a": [1234"#));
        // Alternatives that could outgrow the parses followed at once are refused up front.
        let alts: Vec<String> = (0..300)
            .map(|i| {
                format!(r#"{{"type": "object", "properties": {{"k{i}": {{"type": "null"}}}}}}"#)
            })
            .collect();
        let e = JsonSchema::compile(&json(&format!(r#"{{"anyOf": [{}]}}"#, alts.join(", "))));
        assert!(e.unwrap_err().contains("parses at once"));
        // Whatever compiles decodes from its canonical text: a nullable field at the deepest
        // level, also as a tool's parameters under `auto`.
        let mut deep = r#"{"type": ["string", "null"]}"#.to_string();
        for _ in 0..15 {
            deep = format!(r#"{{"type": "object", "properties": {{"a": {deep}}}}}"#);
        }
        let d = JsonSchema::compile_object(&json(&deep)).unwrap();
        assert_eq!(JsonSchema::from_canonical(d.canonical()).unwrap(), d);
        let tools = [
            ("f".to_string(), json(&deep)),
            ("g".to_string(), json(&deep)),
        ];
        let t = JsonSchema::tool_calls_or_text(&tools).unwrap();
        assert_eq!(JsonSchema::from_canonical(t.canonical()).unwrap(), t);
    }

    #[test]
    fn members_keep_document_order_and_duplicate_keys_are_refused() {
        let v = json(r#"{"z": 1, "a": {"y": [1, 2.5, "s", null, true]}, "m": false}"#);
        let Json::Object(m) = &v else { panic!() };
        let keys: Vec<&str> = m.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["z", "a", "m"]);
        assert_eq!(
            v.to_text(),
            r#"{"z":1,"a":{"y":[1,2.5,"s",null,true]},"m":false}"#
        );
        assert!(serde_json::from_str::<Json>(r#"{"a": 1, "a": 2}"#).is_err());
    }

    /// A random value of `node`, written in the grammar's layout.
    fn generate(node: &Node, rng: &mut ChaCha8Rng, depth: usize, out: &mut String) {
        let mut pick = |n: usize| (rng.next_u32() as usize) % n;
        match node {
            Node::Object(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(&quote(k));
                    out.push_str(": ");
                    generate(v, rng, depth + 1, out);
                }
                out.push('}');
            }
            Node::Array(item) => {
                let n = if depth > 4 { 0 } else { pick(4) };
                out.push('[');
                for i in 0..n {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    generate(item, rng, depth + 1, out);
                }
                out.push(']');
            }
            Node::String => {
                let pieces = [
                    "a",
                    " ",
                    "\\n",
                    "\\\"",
                    "\u{e9}",
                    "\u{1f600}",
                    "\\u00e9",
                    "\\ud83d\\ude00",
                    "/",
                ];
                out.push('"');
                for _ in 0..pick(6) {
                    out.push_str(pieces[pick(pieces.len())]);
                }
                out.push('"');
            }
            Node::Number => {
                let nums = ["0", "-1", "3.25", "1e5", "-0.5E-7", "12"];
                out.push_str(nums[pick(nums.len())]);
            }
            Node::Integer => out.push_str(["0", "-7", "42", "100000"][pick(4)]),
            Node::Boolean => out.push_str(["true", "false"][pick(2)]),
            Node::Null => out.push_str("null"),
            Node::Enum(t) => out.push_str(&t[pick(t.len())]),
            Node::AnyOf(a) => {
                let i = pick(a.len());
                generate(&a[i], rng, depth, out)
            }
            Node::OrText(inner) => generate(inner, rng, depth, out),
        }
    }

    #[test]
    fn random_outputs_are_accepted_and_the_fast_path_agrees_with_the_full_walk() {
        let p = json(PERSON);
        let node = from_schema(&p, "schema", 0, &mut Ctx::new(&p)).unwrap();
        let s = schema(PERSON);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..300 {
            let mut out = String::new();
            generate(&node, &mut rng, 0, &mut out);
            assert!(complete(&s, &out), "{out}");
            serde_json::from_str::<serde_json::Value>(&out).expect("parses");
            // Cut the output at random points into "tokens"; at every cut, `accepts` must
            // agree with `after` for the true next piece and for mutated ones.
            let bytes = out.as_bytes();
            let mut st = s.start();
            let mut i = 0;
            while i < bytes.len() {
                let n = 1 + (rng.next_u32() as usize) % 6;
                let piece = &bytes[i..(i + n).min(bytes.len())];
                assert!(s.accepts(&st, piece));
                let mut wrong = piece.to_vec();
                let j = (rng.next_u32() as usize) % wrong.len();
                wrong[j] = (rng.next_u32() % 256) as u8;
                assert_eq!(
                    s.accepts(&st, &wrong),
                    s.after(&st, &wrong).is_some(),
                    "{wrong:?}"
                );
                st = s.after(&st, piece).unwrap();
                i += piece.len();
            }
            assert!(s.is_complete(&st));
        }
    }
}
