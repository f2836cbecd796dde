//! Filler text for the generated tree: lines in the shape of each file kind, and the fake
//! AccessKeyIds, AccessKeySecrets and placeholders planted in them.
//!
//! Filler never contains `LTAI`, a 30-character run of letters and digits (an
//! AccessKeySecret's shape), or a well-known AccessKey name assigned a key-shaped value, so
//! every finding comes from a planted line. Words are lowercase; tokens are lowercase hex of
//! 8, 16 (quoted, not after a key name), 40 or 64 characters.

use rand::rngs::SmallRng;
use rand::Rng;

const ALNUM: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const HEX: &[u8] = b"0123456789abcdef";

const WORDS: &[&str] = &[
    "alpha", "bucket", "cache", "daemon", "endpoint", "format", "gateway", "handler", "index",
    "json", "kernel", "listener", "metrics", "node", "object", "payload", "queue", "region",
    "socket", "timeout", "upload", "vector", "worker", "yaml", "zone", "build", "client", "deploy",
    "error", "file", "group", "host", "image", "job", "label", "mount", "network", "option",
    "path", "query", "retry", "service", "token", "user", "value", "window", "backup", "config",
    "docker", "export", "fetch", "github", "health", "instance", "logger", "module", "nginx",
    "oss", "python", "release", "storage", "target", "update", "version", "webhook",
];

/// The kinds of generated files, each with its own line shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `.py`, `.go`, `.java`, `.js`: code lines.
    Source,
    /// `.ini`, `.conf`, `.properties`: `key = value`.
    Config,
    /// `.env` and dotfiles (`.bashrc`, `.envrc`): `export NAME=value`.
    Env,
    /// Pretty-printed `.json`.
    Json,
    /// `.yaml`.
    Yaml,
    /// `.toml`.
    Toml,
    /// `.bash_history`, `.zsh_history`: commands.
    History,
    /// `.min.js`: few lines of tens of KiB.
    Minified,
    /// `.log`: timestamped lines.
    Log,
    /// `.so`, `.bin`, `.pyc`: a NUL byte in the first bytes, then random bytes.
    Binary,
}

/// File kinds by weight (out of 100), for picking one per file.
pub const KIND_WEIGHTS: &[(Kind, u32)] = &[
    (Kind::Source, 22),
    (Kind::Config, 8),
    (Kind::Env, 8),
    (Kind::Json, 12),
    (Kind::Yaml, 8),
    (Kind::Toml, 5),
    (Kind::History, 6),
    (Kind::Minified, 6),
    (Kind::Log, 17),
    (Kind::Binary, 8),
];

impl Kind {
    /// Picks a kind by [`KIND_WEIGHTS`].
    pub fn pick(rng: &mut SmallRng) -> Kind {
        let mut n = rng.random_range(0..100u32);
        for &(kind, w) in KIND_WEIGHTS {
            if n < w {
                return kind;
            }
            n -= w;
        }
        Kind::Source
    }

    /// A file name for the `index`-th file of this kind (unique across the tree).
    pub fn file_name(self, index: usize, rng: &mut SmallRng) -> String {
        let pick = |rng: &mut SmallRng, v: &[&str]| v[rng.random_range(0..v.len())].to_string();
        let word = WORDS[index % WORDS.len()];
        match self {
            Kind::Source => format!("{word}_{index}.{}", pick(rng, &["py", "go", "java", "js"])),
            Kind::Config => format!(
                "{word}-{index}.{}",
                pick(rng, &["ini", "conf", "properties"])
            ),
            Kind::Env => format!(
                "{}.{index}",
                pick(rng, &[".env", ".envrc", ".bashrc", ".profile"])
            ),
            Kind::Json => format!("{word}-{index}.json"),
            Kind::Yaml => format!("{word}-{index}.yaml"),
            Kind::Toml => format!("{word}-{index}.toml"),
            Kind::History => format!("{}.{index}", pick(rng, &[".bash_history", ".zsh_history"])),
            Kind::Minified => format!("{word}-{index}.min.js"),
            Kind::Log => format!("{word}-{index}.log"),
            Kind::Binary => format!("{word}-{index}.{}", pick(rng, &["so", "bin", "pyc"])),
        }
    }

    /// The file size to aim for, in bytes (log-uniform within the kind's range).
    pub fn size(self, rng: &mut SmallRng) -> usize {
        let (lo, hi): (f64, f64) = match self {
            Kind::Minified => (32e3, 1e6),
            Kind::Log => (16e3, 1e6),
            Kind::Binary => (4e3, 1e6),
            Kind::History => (2e3, 200e3),
            _ => (400.0, 160e3),
        };
        let x: f64 = rng.random_range(lo.ln()..hi.ln());
        x.exp() as usize
    }
}

/// Appends `n` random characters from `set`.
fn push_from(out: &mut Vec<u8>, rng: &mut SmallRng, set: &[u8], n: usize) {
    out.extend((0..n).map(|_| set[rng.random_range(0..set.len())]));
}

fn word(rng: &mut SmallRng) -> &'static str {
    WORDS[rng.random_range(0..WORDS.len())]
}

fn hex(rng: &mut SmallRng, n: usize) -> String {
    let mut v = Vec::with_capacity(n);
    push_from(&mut v, rng, HEX, n);
    String::from_utf8(v).expect("hex is ASCII")
}

/// A fake AccessKeyId: `LTAI` and `tail` letters and digits (20 for current ids, 12 for older).
pub fn access_key_id(rng: &mut SmallRng, tail: usize) -> String {
    loop {
        let mut v = b"LTAI".to_vec();
        push_from(&mut v, rng, ALNUM, tail);
        // A one-character tail would be a placeholder: never plant one as a key.
        if v[5..].iter().any(|&c| c != v[4]) {
            return String::from_utf8(v).expect("ASCII");
        }
    }
}

/// A fake AccessKeySecret: 30 letters and digits with an uppercase letter and a lowercase
/// letter or digit (`scan`'s rule, which all but 1 in 10^7 random secrets meet), never
/// containing `LTAI`.
pub fn access_key_secret(rng: &mut SmallRng) -> String {
    loop {
        let mut v = Vec::with_capacity(30);
        push_from(&mut v, rng, ALNUM, 30);
        let mixed = v.iter().any(u8::is_ascii_uppercase)
            && v.iter()
                .any(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if mixed && !v.windows(4).any(|w| w == b"LTAI") {
            return String::from_utf8(v).expect("ASCII");
        }
    }
}

/// A placeholder that looks like an AccessKeyId and must not be reported:
/// `LTAIxxxxxxxxxxxxxxxx`, `LTAIXXXXXXXXXXXX`, `LTAI0000…`, `LTAI****…`.
pub fn placeholder(rng: &mut SmallRng) -> String {
    let (c, n) = [('x', 20), ('X', 12), ('0', 20), ('*', 20), ('x', 12)][rng.random_range(0..5)];
    format!("LTAI{}", c.to_string().repeat(n))
}

/// Whether ripgrep's `\bLTAI[0-9A-Za-z]{12,20}\b` matches this planted string.
pub fn rg_matches(id: &str) -> bool {
    let tail = &id.as_bytes()[4..];
    (12..=20).contains(&tail.len()) && tail.iter().all(u8::is_ascii_alphanumeric)
}

/// Names an AccessKeyId is assigned to in the wild.
pub const ID_NAMES: &[&str] = &[
    "ALIBABA_CLOUD_ACCESS_KEY_ID",
    "ALICLOUD_ACCESS_KEY",
    "accessKeyId",
    "access_key_id",
    "oss_key",
    "ak",
];
/// Names an AccessKeySecret is assigned to in the wild.
pub const SECRET_NAMES: &[&str] = &[
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
    "ALICLOUD_SECRET_KEY",
    "accessKeySecret",
    "access_key_secret",
    "oss_secret",
    "sk",
];

/// The text before and after a value assigned to `name` on one line of a file of `kind`
/// (the line is `before + value + after`, `after` ending with a newline).
pub fn assignment(kind: Kind, name: &str, rng: &mut SmallRng) -> (String, String) {
    match kind {
        Kind::Source => (format!("    {name} = \""), "\"\n".into()),
        Kind::Config => (format!("{name} = "), "\n".into()),
        Kind::Env => (format!("export {name}="), "\n".into()),
        Kind::Json => (format!("  \"{name}\": \""), "\",\n".into()),
        Kind::Yaml => (format!("  {name}: "), "\n".into()),
        Kind::Toml => (format!("{name} = \""), "\"\n".into()),
        Kind::History => (format!("export {name}='"), "'\n".into()),
        Kind::Minified => {
            let mut before = Vec::new();
            minified_chunk(&mut before, rng, 2000);
            let mut after = b"\",".to_vec();
            minified_chunk(&mut after, rng, 2000);
            after.push(b'\n');
            let mut b = String::from_utf8(before).expect("ASCII");
            b.push_str(&format!("{name}:\""));
            (b, String::from_utf8(after).expect("ASCII"))
        }
        Kind::Log => (
            format!(
                "2026-11-02T10:{:02}:00Z INFO client started with {name}=",
                rng.random_range(0..60)
            ),
            "\n".into(),
        ),
        Kind::Binary => (format!("{name}="), "\x00".into()),
    }
}

/// A line holding both an AccessKeyId and its AccessKeySecret (the key's column is
/// `before.len() + 1`): a CLI call, a JSON object, a connection string.
pub fn pair_on_one_line(kind: Kind, secret: &str) -> (String, String) {
    match kind {
        Kind::History | Kind::Env | Kind::Log => (
            "aliyun configure set --mode AK --access-key-id ".into(),
            format!(" --access-key-secret {secret} --region cn-hangzhou\n"),
        ),
        Kind::Json | Kind::Minified => (
            "{\"credentials\":{\"accessKeyId\":\"".into(),
            format!("\",\"accessKeySecret\":\"{secret}\"}}}}\n"),
        ),
        _ => (
            "    client = new_client(\"".into(),
            format!("\", \"{secret}\", \"cn-shanghai\")\n"),
        ),
    }
}

/// Appends a minified-JavaScript chunk of about `n` bytes (no newline).
fn minified_chunk(out: &mut Vec<u8>, rng: &mut SmallRng, n: usize) {
    let end = out.len() + n;
    while out.len() < end {
        let a = word(rng);
        let b = word(rng);
        match rng.random_range(0..4) {
            0 => out.extend_from_slice(format!("function {a}(e,t){{return e.{b}+t}};").as_bytes()),
            1 => out.extend_from_slice(
                format!(
                    "var {a}={{{b}:\"{}\",n:{}}};",
                    hex(rng, 8),
                    rng.random_range(0..999)
                )
                .as_bytes(),
            ),
            2 => out
                .extend_from_slice(format!("if(!{a}.{b})throw new Error(\"{a} {b}\");").as_bytes()),
            _ => out.extend_from_slice(format!("{a}.{b}=\"{}\";", hex(rng, 40)).as_bytes()),
        }
    }
}

/// Appends one filler line of a file of `kind` (ending with a newline; binaries: a block of
/// random bytes).
pub fn filler_line(out: &mut Vec<u8>, kind: Kind, rng: &mut SmallRng) {
    let (a, b, c) = (word(rng), word(rng), word(rng));
    let n: u32 = rng.random_range(0..10_000);
    let line = match kind {
        Kind::Source => match rng.random_range(0..5) {
            0 => format!("def {a}_{b}(self, {c}):\n"),
            1 => format!("    {a} = self.{b}.get(\"{c}\", {n})\n"),
            2 => format!("    # {a} the {b} before {c}\n"),
            3 => format!("    return {a}_{b}({c}, timeout={n})\n"),
            _ => format!("    digest = \"{}\"\n", hex(rng, 64)),
        },
        Kind::Config => match rng.random_range(0..3) {
            0 => format!("[{a}.{b}]\n"),
            1 => format!("{a}_{b} = {c}-{n}\n"),
            _ => format!("{a}.{b}.checksum = {}\n", hex(rng, 40)),
        },
        Kind::Env => match rng.random_range(0..3) {
            0 => format!("export {}_{}={c}{n}\n", a.to_uppercase(), b.to_uppercase()),
            1 => format!("alias {a}='{b} --{c}'\n"),
            _ => format!("# {a} {b} {c}\n"),
        },
        Kind::Json => match rng.random_range(0..3) {
            0 => format!("  \"{a}_{b}\": \"{c}-{n}\",\n"),
            1 => format!("  \"{a}\": {{\"{b}\": {n}, \"{c}\": true}},\n"),
            _ => format!("  \"sha\": \"{}\",\n", hex(rng, 40)),
        },
        Kind::Yaml => match rng.random_range(0..3) {
            0 => format!("{a}:\n"),
            1 => format!("  {b}_{c}: {n}\n"),
            _ => format!("  - name: {a}-{b}\n    image: {c}:{}\n", hex(rng, 16)),
        },
        Kind::Toml => match rng.random_range(0..3) {
            0 => format!("[{a}]\n"),
            1 => format!("{b} = \"{c}-{n}\"\n"),
            _ => format!("{b}_{c} = {n}\n"),
        },
        Kind::History => match rng.random_range(0..4) {
            0 => format!("cd /srv/{a}/{b}\n"),
            1 => format!("aliyun ecs DescribeInstances --RegionId cn-hangzhou --{a} {c}\n"),
            2 => format!("kubectl -n {a} logs {b}-{}\n", hex(rng, 8)),
            _ => format!("git commit -m \"{a} {b} {c}\"\n"),
        },
        Kind::Minified => {
            minified_chunk(out, rng, 30_000);
            out.push(b'\n');
            return;
        }
        Kind::Log => format!(
            "2026-11-02T10:{:02}:{:02}.{n:04}Z INFO {a}: {b} {c} took {}ms request_id={}\n",
            n % 60,
            n % 59,
            n % 977,
            hex(rng, 16)
        ),
        Kind::Binary => {
            push_from(out, rng, b"\x00\x01\x7fELF\x02\xffabcdefgh\x10 ", 4096);
            return;
        }
    };
    out.extend_from_slice(line.as_bytes());
}
