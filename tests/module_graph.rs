// Import cycles between the files of `src/`. A file imports another when it names a path into
// it: `use crate::a::b`, `super::x::f()`, `child::T` in the file that declares `mod child;`,
// `edgesight::…` from the binaries. A cycle means none of its files can be read, tested or
// moved alone, so the test fails on every strongly connected component of two or more files.
// Std only; plain `//` comments (no `//!`) so the file can also be `include!`d.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};

/// `edgesight::` paths (main.rs, bin/*) resolve into lib.rs's module tree, root 0.
const LIB_NAME: &str = "edgesight";

/// A token of code with its line. Comments are dropped; a string literal is one token, its
/// body after a `"`, so text in docs and strings never reads as a path.
struct Tok {
    s: String,
    line: usize,
}

fn tokenize(src: &str) -> Vec<Tok> {
    let c: Vec<char> = src.chars().collect();
    let newlines: Vec<usize> = (0..c.len()).filter(|&k| c[k] == '\n').collect();
    let at = |k: usize| c.get(k).copied().unwrap_or('\0');
    let find = |from: usize, ch: char| (from..).find(|&k| at(k) == ch || k >= c.len()).unwrap();
    let in_word = |k: usize| at(k).is_alphanumeric() || at(k) == '_';
    let (mut toks, mut i) = (Vec::new(), 0);
    while i < c.len() {
        // A word at i ends at w, followed by h - w `#`s.
        let w = (i..).find(|&k| !in_word(k)).unwrap();
        let h = (w..).find(|&k| at(k) != '#').unwrap();
        let word: String = c[i..w].iter().collect();
        // Where this token ends, and the chars to keep as a token (none for comments etc.).
        let (end, keep) = match (at(i), at(i + 1), word.as_str()) {
            ('/', '/', _) => (find(i, '\n'), None),
            ('/', '*', _) => (block_comment_end(&c, i), None),
            ('"', _, _) => string_end(&c, i + 1, None),
            (_, _, "r" | "br" | "cr") if at(h) == '"' => string_end(&c, h + 1, Some(h - w)),
            (_, _, "b" | "c") if at(w) == '"' => string_end(&c, w + 1, None),
            (_, _, "r") if h == w + 1 => (h, None), // r#ident: the name lexes next
            ('\'', '\\', _) => (find(i + 3, '\'') + 1, None), // '\n', '\'', '\u{..}'
            ('\'', _, _) if at(i + 2) == '\'' => (i + 3, None), // 'x'
            (':', ':', _) => (i + 2, Some(c[i..i + 2].to_vec())),
            (ch, _, "") if ch.is_whitespace() || ch == '\'' => (i + 1, None), // ' of a lifetime
            (_, _, "") => (i + 1, Some(vec![at(i)])),
            _ => (w, Some(c[i..w].to_vec())),
        };
        if let Some(s) = keep {
            let line = newlines.partition_point(|&n| n < i) + 1;
            toks.push(Tok {
                s: s.into_iter().collect(),
                line,
            });
        }
        i = end;
    }
    toks
}

/// Where the block comment at `i` ends; block comments nest.
fn block_comment_end(c: &[char], mut i: usize) -> usize {
    let mut depth = 0;
    while i + 1 < c.len() {
        match (c[i], c[i + 1]) {
            ('/', '*') => depth += 1,
            ('*', '/') => depth -= 1,
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
        if depth == 0 {
            return i;
        }
    }
    c.len()
}

/// The end of the string body at `from`, and the body as a token `"…`. Raw strings, with
/// their count of `#`s, have no escapes.
fn string_end(c: &[char], from: usize, raw: Option<usize>) -> (usize, Option<Vec<char>>) {
    let hashes = raw.unwrap_or(0);
    let closes =
        |k: usize| c[k] == '"' && c[k + 1..].iter().take_while(|&&x| x == '#').count() >= hashes;
    let mut k = from;
    while k < c.len() && !closes(k) {
        k += if c[k] == '\\' && raw.is_none() { 2 } else { 1 };
    }
    let body = std::iter::once('"').chain(c[from..k.min(c.len())].iter().copied());
    (k + 1 + hashes, Some(body.collect()))
}

fn is_ident(s: &str) -> bool {
    s.starts_with(|c: char| c.is_alphabetic() || c == '_')
}

/// The text of token `i`, or "" past the end.
fn txt(toks: &[Tok], i: usize) -> &str {
    toks.get(i).map_or("", |t| t.s.as_str())
}

/// A path in a file; `inline` names the inline `mod name { … }` blocks around it.
struct PathRef {
    inline: Vec<String>,
    segs: Vec<String>,
    line: usize,
}

/// A `mod name;` in a file, with its `#[path = "…"]` if any.
struct ModDecl {
    inline: Vec<String>,
    name: String,
    path_attr: Option<String>,
}

/// What one file declares and names, in one pass over its tokens.
#[derive(Default)]
struct Scan {
    mods: Vec<ModDecl>,
    paths: Vec<PathRef>,
}

fn scan(toks: &[Tok]) -> Scan {
    let mut inline: Vec<(String, usize)> = Vec::new(); // open inline mods, with their depth
    let (mut out, mut depth, mut path_attr, mut i) = (Scan::default(), 0, None, 0);
    while i < toks.len() {
        let names: Vec<String> = inline.iter().map(|(n, _)| n.clone()).collect();
        let t = |k: usize| txt(toks, i + k);
        match (t(0), t(1), t(2)) {
            ("path", "=", s) if s.starts_with('"') => path_attr = Some(s[1..].to_string()),
            ("mod", name, "{") if is_ident(name) => inline.push((name.to_string(), depth)),
            ("mod", name, ";") if is_ident(name) => {
                let decl = ModDecl {
                    name: name.to_string(),
                    path_attr: path_attr.take(),
                    inline: names,
                };
                out.mods.push(decl);
            }
            ("use", _, _) => {
                let mut leaves = Vec::new();
                i = use_tree(toks, i + 1, Vec::new(), &mut leaves) - 1;
                for (segs, line) in leaves {
                    let inline = names.clone();
                    out.paths.push(PathRef { inline, segs, line });
                }
            }
            // An expression or type path `a::b::c`, up to `::<` or the end.
            (a, "::", _) if is_ident(a) && (i == 0 || txt(toks, i - 1) != "::") => {
                let mut segs = vec![a.to_string()];
                while txt(toks, i + 1) == "::" && is_ident(txt(toks, i + 2)) {
                    segs.push(txt(toks, i + 2).to_string());
                    i += 2;
                }
                let (inline, line) = (names, toks[i].line);
                out.paths.push(PathRef { inline, segs, line });
            }
            ("{", _, _) => (depth, path_attr) = (depth + 1, None),
            ("}", _, _) => {
                depth -= 1;
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            (";", _, _) => path_attr = None, // a #[path] is for the item right after it
            _ => {}
        }
        i += 1;
    }
    out
}

/// A path in a `use` item, with its line.
type Leaf = (Vec<String>, usize);

/// Expands the use tree at `i` (`a::{b::{self, C}, d::*}`) into its leaf paths, each with the
/// line of its leaf. Returns the index after the tree.
fn use_tree(toks: &[Tok], mut i: usize, mut segs: Vec<String>, out: &mut Vec<Leaf>) -> usize {
    if txt(toks, i) == "::" {
        segs.push("::".into()); // `use ::x`: an external crate, never resolves
        i += 1;
    }
    while is_ident(txt(toks, i)) {
        segs.push(txt(toks, i).to_string());
        if txt(toks, i + 1) != "::" {
            out.push((segs, toks[i].line));
            let rename = if txt(toks, i + 1) == "as" { 2 } else { 0 };
            return i + 1 + rename;
        }
        i += 2;
    }
    match txt(toks, i) {
        "*" => out.push((segs, toks[i].line)),
        "{" => {
            i += 1;
            while i < toks.len() && txt(toks, i) != "}" {
                let next = use_tree(toks, i, segs.clone(), out);
                i = next + usize::from(txt(toks, next) == "," || next == i);
            }
        }
        _ => return i,
    }
    i + 1
}

/// One module file: its crate root (0 = lib.rs), its module path, whether a `mod` line
/// declares it, its text, and what it names.
struct ModFile {
    file: PathBuf,
    root: usize,
    path: Vec<String>,
    declared: bool,
    text: String,
    scan: Scan,
}

/// The module files of a package's `src/`, and where each (root, module path) is.
struct Tree {
    src: PathBuf,
    files: Vec<ModFile>,
    index: HashMap<(usize, Vec<String>), usize>,
}

/// A module file still to read: file, root, module path, folder of its children, declared.
type Pending = (PathBuf, usize, Vec<String>, PathBuf, bool);

impl Tree {
    /// Follows `mod` lines from the roots lib.rs (root 0), main.rs and bin/*.rs.
    fn load(src: &Path) -> Tree {
        let mut roots = vec![src.join("lib.rs"), src.join("main.rs")];
        let bins = entries(&src.join("bin"));
        roots.extend(bins.into_iter().filter(|p| p.is_file()));
        let mut queue: VecDeque<Pending> = VecDeque::new();
        for (root, file) in roots.into_iter().enumerate() {
            queue.push_back((file.clone(), root, vec![], dir_of(&file), true));
        }
        let (src, files, index) = (src.to_path_buf(), vec![], HashMap::new());
        let mut tree = Tree { src, files, index };
        while let Some((file, root, path, dir, declared)) = queue.pop_front() {
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            if let Some(known) = tree.files.iter().position(|m| m.file == file) {
                tree.index.insert((root, path), known); // one file under two roots
                continue;
            }
            let scan = scan(&tokenize(&text));
            queue.extend(children(&file, root, &path, &dir, &scan));
            tree.index.insert((root, path.clone()), tree.files.len());
            tree.files.push(ModFile {
                file,
                root,
                path,
                declared,
                text,
                scan,
            });
        }
        tree
    }

    /// The deepest module file that `segs` names from module `cur` of `root`; None when the
    /// path leaves the crate (std::, serde::, Self::, a local type).
    fn resolve(&self, root: usize, cur: &[String], segs: &[String]) -> Option<usize> {
        let (mut root, mut base, mut rest) = (root, cur.to_vec(), segs);
        match segs[0].as_str() {
            "crate" => (base, rest) = (vec![], &segs[1..]),
            "self" | "super" => {
                while let Some(s) = rest.first().filter(|s| *s == "self" || *s == "super") {
                    if s == "super" {
                        base.pop()?;
                    }
                    rest = &rest[1..];
                }
            }
            LIB_NAME if root != 0 => (root, base, rest) = (0, vec![], &segs[1..]),
            // A bare path names a child only when this module declares it with `mod`.
            first => {
                let child = self.index.get(&(root, join(cur, first)))?;
                self.files[*child].declared.then_some(())?
            }
        }
        base.extend(rest.iter().filter(|s| *s != "self").cloned());
        let mut prefixes = (0..=base.len()).rev();
        prefixes.find_map(|n| self.index.get(&(root, base[..n].to_vec())).copied())
    }

    /// The edges file → file, each with the first line that makes it: `file:line: text (path)`.
    fn edges(&self) -> BTreeMap<(usize, usize), String> {
        let mut out = BTreeMap::new();
        for (from, m) in self.files.iter().enumerate() {
            for p in &m.scan.paths {
                let cur = [&m.path[..], &p.inline[..]].concat();
                // A path into the file itself (`use super::*` in `mod tests`) is no edge.
                let Some(to) = self.resolve(m.root, &cur, &p.segs).filter(|&to| to != from) else {
                    continue;
                };
                let text = m.text.lines().nth(p.line - 1).unwrap_or("").trim();
                let (file, path) = (self.name(from), p.segs.join("::"));
                let evidence = format!("{file}:{}: {text}  ({path})", p.line);
                out.entry((from, to)).or_insert(evidence);
            }
        }
        out
    }

    /// File `i`'s path under src/.
    fn name(&self, i: usize) -> String {
        let file = &self.files[i].file;
        let rel = file.strip_prefix(&self.src).unwrap_or(file);
        rel.display().to_string()
    }
}

/// The modules a file declares, then those with a file in its folder but no `mod` line yet
/// (mid-refactor it already is that module); crate roots get only the declared ones.
fn children(file: &Path, root: usize, path: &[String], dir: &Path, scan: &Scan) -> Vec<Pending> {
    let mut out = Vec::new();
    for m in &scan.mods {
        let sub = m.inline.iter().fold(dir.to_path_buf(), |d, n| d.join(n));
        let (f, d) = match &m.path_attr {
            // A #[path] file is read like a mod.rs: its children sit beside it.
            Some(p) => (dir_of(file).join(p), dir_of(&dir_of(file).join(p))),
            None => (module_file(&sub, &m.name), sub.join(&m.name)),
        };
        let child = join(&[path, &m.inline[..]].concat(), &m.name);
        out.push((f, root, child, d, true));
    }
    let entries = entries(dir).into_iter().filter(|_| !path.is_empty());
    let names = entries.filter(|p| p.extension().is_some_and(|x| x == "rs") || p.is_dir());
    for name in names.filter_map(|p| Some(p.file_stem()?.to_str()?.to_string())) {
        let (f, d) = (module_file(dir, &name), dir.join(&name));
        if is_ident(&name) && f.is_file() && !scan.mods.iter().any(|m| m.name == name) {
            out.push((f, root, join(path, &name), d, false));
        }
    }
    out
}

/// `name.rs`, else `name/mod.rs`, in `dir`.
fn module_file(dir: &Path, name: &str) -> PathBuf {
    let flat = dir.join(format!("{name}.rs"));
    if flat.is_file() {
        flat
    } else {
        dir.join(name).join("mod.rs")
    }
}

/// The paths in `dir`, sorted; none when it does not exist.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut paths: Vec<PathBuf> = read.flatten().map(|e| e.path()).collect();
    paths.sort();
    paths
}

fn dir_of(file: &Path) -> PathBuf {
    file.parent().unwrap().to_path_buf()
}

fn join(path: &[String], name: &str) -> Vec<String> {
    let mut out = path.to_vec();
    out.push(name.to_string());
    out
}

/// Tarjan's strongly connected components of the graph `adj` (node → its successors).
struct Tarjan<'a> {
    adj: &'a [Vec<usize>],
    index: Vec<Option<usize>>,
    low: Vec<usize>,
    stack: Vec<usize>,
    sccs: Vec<Vec<usize>>,
}

impl Tarjan<'_> {
    fn sccs(adj: &[Vec<usize>]) -> Vec<Vec<usize>> {
        let n = adj.len();
        let (index, low) = (vec![None; n], vec![0; n]);
        let mut t = Tarjan {
            adj,
            index,
            low,
            stack: vec![],
            sccs: vec![],
        };
        for v in 0..n {
            if t.index[v].is_none() {
                t.visit(v);
            }
        }
        t.sccs
    }

    fn visit(&mut self, v: usize) {
        let order = self.index.iter().flatten().count(); // nodes visited so far
        (self.index[v], self.low[v]) = (Some(order), order);
        self.stack.push(v);
        for &w in &self.adj[v] {
            match self.index[w] {
                None => {
                    self.visit(w);
                    self.low[v] = self.low[v].min(self.low[w]);
                }
                Some(iw) if self.stack.contains(&w) => self.low[v] = self.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(self.low[v]) == self.index[v] {
            let at = self.stack.iter().rposition(|&w| w == v).unwrap();
            let scc = self.stack.split_off(at);
            self.sccs.push(scc);
        }
    }
}

/// The shortest cycle through `v` inside `scc` (breadth first), as nodes `v … v`.
fn shortest_cycle(adj: &[Vec<usize>], scc: &[usize], v: usize) -> Vec<usize> {
    let mut parent = vec![None; adj.len()];
    let mut queue = VecDeque::from([v]);
    while let Some(u) = queue.pop_front() {
        for &w in adj[u].iter().filter(|w| scc.contains(w)) {
            if w == v {
                let mut path = vec![v, u];
                while let Some(p) = parent[path[path.len() - 1]] {
                    path.push(p);
                }
                path.reverse();
                return path;
            }
            if parent[w].is_none() {
                parent[w] = Some(u);
                queue.push_back(w);
            }
        }
    }
    vec![v]
}

/// One report per strongly connected component of two or more files: its files, then cycles
/// that pass through all of them, each edge with the first line that makes it.
pub fn find_cycles(src: &Path) -> Vec<String> {
    let tree = Tree::load(src);
    let evidence = tree.edges();
    let mut adj = vec![Vec::new(); tree.files.len()];
    for &(a, b) in evidence.keys() {
        adj[a].push(b);
    }
    let mut reports = Vec::new();
    for mut scc in Tarjan::sccs(&adj).into_iter().filter(|s| s.len() >= 2) {
        scc.sort_by_key(|&v| tree.name(v));
        let names: Vec<String> = scc.iter().map(|&v| tree.name(v)).collect();
        let mut report = format!("{} files: {}\n", scc.len(), names.join(", "));
        let mut covered = vec![false; adj.len()];
        for &v in &scc {
            if covered[v] {
                continue;
            }
            let cycle = shortest_cycle(&adj, &scc, v);
            let hops: Vec<String> = cycle.iter().map(|&n| tree.name(n)).collect();
            report += &format!("  {}\n", hops.join(" -> "));
            for e in cycle.windows(2) {
                covered[e[0]] = true;
                report += &format!("    {}\n", evidence[&(e[0], e[1])]);
            }
        }
        reports.push(report);
    }
    reports.sort();
    reports
}

#[test]
fn no_two_files_in_src_import_each_other() {
    let src = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src"));
    let cycles = find_cycles(src);
    let n = cycles.len();
    assert!(
        n == 0,
        "{n} group(s) of files in src/ import each other in a cycle:\n{}",
        cycles.join("\n")
    );
}
