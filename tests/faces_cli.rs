//! The face enrollment CLI on real photos (face-recognition 1.3.0's Obama and Biden, dlib's
//! crowd photos) and a real video (`carphone_pristine.mp4`), with a real SQLite gallery.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{asset, edgesight, error_line, launch_to_eos};

fn photo(name: &str) -> String {
    let p = ["calibration/faces", "calibration/heldout/faces"]
        .iter()
        .map(|d| common::root().join(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name}: run scripts/setup.sh"));
    p.to_string_lossy().into_owned()
}

fn faces(gallery: &Path, args: &[&str]) -> Output {
    let mut all = vec!["faces", "--gallery", gallery.to_str().unwrap()];
    all.extend_from_slice(args);
    edgesight(&all)
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// JSON lines of `faces identify --json`.
fn identify(gallery: &Path, file: &str) -> Vec<serde_json::Value> {
    ok(&faces(gallery, &["identify", "--json", file]))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn listed(gallery: &Path) -> Vec<(String, u64)> {
    let v: serde_json::Value =
        serde_json::from_str(&ok(&faces(gallery, &["list", "--json"]))).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["embeddings"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn obama_is_named_and_biden_is_not_taken_for_him() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("faces.db");
    let out = ok(&faces(
        &g,
        &[
            "enroll",
            "--name",
            "obama",
            &photo("facerec-obama.jpg"),
            &photo("facerec-obama3.jpg"),
        ],
    ));
    assert!(out.contains("2 new faces"), "{out}");
    let o2 = identify(&g, &photo("facerec-obama2.jpg"));
    assert_eq!(o2.len(), 1);
    assert_eq!(o2[0]["name"], "obama", "{o2:?}");
    assert!(o2[0]["similarity"].as_f64().unwrap() > 0.6);
    let b = identify(&g, &photo("facerec-biden.jpg"));
    assert_eq!(b.len(), 1);
    assert_eq!(b[0]["name"], "unknown", "{b:?}");
    // Strangers in a crowd are nobody.
    for f in identify(&g, &photo("dlib-bald_guys.jpg")) {
        assert_eq!(f["name"], "unknown", "{f}");
    }
}

#[test]
fn verify_tells_the_same_person_from_another() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("faces.db");
    let v = |a: &str, b: &str| -> serde_json::Value {
        serde_json::from_str(&ok(&faces(&g, &["verify", "--json", &photo(a), &photo(b)]))).unwrap()
    };
    let same = v("facerec-obama.jpg", "facerec-obama2.jpg");
    let other = v("facerec-obama.jpg", "facerec-biden.jpg");
    assert_eq!(same["same"], true, "{same}");
    assert_eq!(other["same"], false, "{other}");
    assert!(same["similarity"].as_f64().unwrap() > other["similarity"].as_f64().unwrap() + 0.4);
}

/// The dlib identity chips (5 people): every same-person pair above every different-person pair,
/// or nearly. `calibrate` measures it through detection and alignment like enrollment does.
#[test]
fn same_person_pairs_score_well_above_different_people() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("faces.db");
    let chips = common::root().join("calibration/heldout/face-chips");
    assert!(chips.is_dir(), "run scripts/setup.sh");
    let v: serde_json::Value = serde_json::from_str(&ok(&faces(
        &g,
        &["calibrate", "--json", chips.to_str().unwrap()],
    )))
    .unwrap();
    assert!(v["faces"].as_u64().unwrap() >= 20, "{v}");
    assert!(v["auc"].as_f64().unwrap() >= 0.99, "{v}");
    let t = v["threshold"].as_f64().unwrap();
    assert!((0.2..0.7).contains(&t), "{v}");
}

#[test]
fn list_rename_remove_export_import() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("faces.db");
    ok(&faces(
        &g,
        &["enroll", "--name", "obama", &photo("facerec-obama.jpg")],
    ));
    ok(&faces(
        &g,
        &["enroll", "--name", "obama", &photo("facerec-obama3.jpg")],
    ));
    ok(&faces(
        &g,
        &["enroll", "--name", "biden", &photo("facerec-biden.jpg")],
    ));
    assert_eq!(listed(&g), vec![("biden".into(), 1), ("obama".into(), 2)]);
    ok(&faces(&g, &["rename", "biden", "joe"]));
    let file = dir.path().join("people.json");
    ok(&faces(&g, &["export", file.to_str().unwrap()]));
    ok(&faces(&g, &["remove", "joe"]));
    assert_eq!(listed(&g), vec![("obama".into(), 2)]);
    let g2 = dir.path().join("copy.db");
    ok(&faces(&g2, &["import", file.to_str().unwrap()]));
    assert_eq!(listed(&g2), vec![("joe".into(), 1), ("obama".into(), 2)]);
    assert_eq!(
        identify(&g2, &photo("facerec-obama2.jpg"))[0]["name"],
        "obama"
    );
    // Unknown names are errors that name the gallery.
    let e = error_line(&faces(&g, &["remove", "nobody"]));
    assert!(e.contains("nobody") && e.contains("faces.db"), "{e}");
}

/// The one face of `carphone_pristine.mp4` enrolls from its best frames.
#[test]
fn a_video_with_one_face_enrolls_its_best_frames() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("faces.db");
    let clip = asset("assets/carphone_pristine.mp4");
    let out = ok(&faces(
        &g,
        &[
            "enroll",
            "--name",
            "driver",
            "--frames",
            "4",
            clip.to_str().unwrap(),
        ],
    ));
    assert!(out.contains("4 new faces"), "{out}");
}

fn image(dir: &Path, name: &str, description: &str) -> PathBuf {
    let p = dir.join(name);
    launch_to_eos(&description.replace("OUT", &p.to_string_lossy()), 30);
    p
}

/// A gallery with Obama enrolled, in a folder that also holds the test's images.
fn gallery_with_obama() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("faces.db");
    ok(&faces(
        &g,
        &["enroll", "--name", "obama", &photo("facerec-obama.jpg")],
    ));
    (dir, g)
}

/// `enroll --name newcomer INPUTS` is refused with one error naming `file` and saying `why`,
/// and the gallery is as it was.
fn refused(g: &Path, inputs: &[&str], why: &str, file: &str) {
    let before = listed(g);
    let mut args = vec!["enroll", "--name", "newcomer"];
    args.extend_from_slice(inputs);
    let o = faces(g, &args);
    assert!(!o.status.success(), "{args:?} enrolled");
    let e = error_line(&o);
    assert!(e.contains(why) && e.contains(file), "{args:?}: {e}");
    assert_eq!(listed(g), before, "{args:?} changed the gallery");
}

fn no_face_image(dir: &Path) -> PathBuf {
    image(
        dir,
        "grey.jpg",
        "videotestsrc num-buffers=1 pattern=gradient ! video/x-raw,width=320,height=240 ! jpegenc ! filesink location=OUT",
    )
}

#[test]
fn a_photo_without_a_face_is_refused() {
    let (dir, g) = gallery_with_obama();
    let p = no_face_image(dir.path());
    refused(
        &g,
        &[p.to_str().unwrap()],
        "no face found",
        p.to_str().unwrap(),
    );
}

/// A good photo first, then a bad one: nothing of the command is enrolled.
#[test]
fn one_bad_photo_enrolls_nothing_of_the_command() {
    let (dir, g) = gallery_with_obama();
    let p = no_face_image(dir.path());
    let good = photo("facerec-obama3.jpg");
    refused(
        &g,
        &[&good, p.to_str().unwrap()],
        "no face found",
        p.to_str().unwrap(),
    );
}

#[test]
fn several_faces_are_refused_unless_largest() {
    let (_dir, g) = gallery_with_obama();
    let crowd = photo("dlib-bald_guys.jpg");
    refused(&g, &[&crowd], "--largest", &crowd);
    ok(&faces(
        &g,
        &["enroll", "--name", "crowd", "--largest", &crowd],
    ));
    assert!(listed(&g).contains(&("crowd".into(), 1)));
}

#[test]
fn a_small_face_is_refused_unless_forced() {
    let (dir, g) = gallery_with_obama();
    let obama = photo("facerec-obama.jpg");
    let tiny = image(
        dir.path(),
        "tiny.jpg",
        &format!("filesrc location={obama} ! jpegdec ! videoscale ! video/x-raw,width=114,height=142 ! jpegenc ! filesink location=OUT"),
    );
    let t = tiny.to_str().unwrap();
    refused(&g, &[t], "too small", t);
    ok(&faces(&g, &["enroll", "--name", "small", "--force", t]));
}

#[test]
fn a_blurred_face_is_refused() {
    let (dir, g) = gallery_with_obama();
    let obama = photo("facerec-obama.jpg");
    let blurred = image(
        dir.path(),
        "blurred.jpg",
        &format!("filesrc location={obama} ! jpegdec ! videoconvert ! gaussianblur sigma=10 ! videoconvert ! jpegenc ! filesink location=OUT"),
    );
    let b = blurred.to_str().unwrap();
    refused(&g, &[b], "blurred", b);
}

#[test]
fn a_corrupt_image_is_refused() {
    let (dir, g) = gallery_with_obama();
    let corrupt = dir.path().join("corrupt.jpg");
    let bytes = std::fs::read(photo("facerec-obama.jpg")).unwrap();
    std::fs::write(&corrupt, &bytes[..600]).unwrap();
    let c = corrupt.to_str().unwrap();
    refused(&g, &[c], "corrupt.jpg", c);
}

/// A name that exists: its faces are added by default, refused with `--new`.
#[test]
fn a_duplicate_name_is_appended_or_refused_with_new() {
    let (_dir, g) = gallery_with_obama();
    let obama3 = photo("facerec-obama3.jpg");
    let e = error_line(&faces(&g, &["enroll", "--name", "obama", "--new", &obama3]));
    assert!(e.contains("obama") && e.contains("faces.db"), "{e}");
    assert_eq!(listed(&g), vec![("obama".into(), 1)]);
    ok(&faces(&g, &["enroll", "--name", "obama", &obama3]));
    assert_eq!(listed(&g), vec![("obama".into(), 2)]);
}

#[test]
fn a_file_that_is_not_a_gallery_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.db");
    std::fs::write(&text, "this is not a database\n".repeat(100)).unwrap();
    let e = error_line(&faces(&text, &["list"]));
    assert!(
        e.contains("notes.db") && e.contains("not an edgesight face gallery"),
        "{e}"
    );
    assert!(std::fs::read_to_string(&text)
        .unwrap()
        .starts_with("this is not"));
}

#[test]
fn a_gallery_from_a_newer_edgesight_is_refused() {
    let (dir, g) = gallery_with_obama();
    let newer = dir.path().join("newer.db");
    std::fs::copy(&g, &newer).unwrap();
    let c = rusqlite::Connection::open(&newer).unwrap();
    c.pragma_update(None, "user_version", 99).unwrap();
    drop(c);
    let e = error_line(&faces(&newer, &["list"]));
    assert!(e.contains("newer.db") && e.contains("newer"), "{e}");
}

#[test]
fn a_gallery_from_another_embedder_is_refused() {
    let (dir, g) = gallery_with_obama();
    let other = dir.path().join("other.db");
    std::fs::copy(&g, &other).unwrap();
    let c = rusqlite::Connection::open(&other).unwrap();
    let n = c
        .execute(
            "UPDATE meta SET value = ?1 WHERE key LIKE '%sha256%'",
            ["0".repeat(64)],
        )
        .unwrap();
    assert!(n >= 1);
    drop(c);
    let e = error_line(&faces(&other, &["identify", &photo("facerec-obama2.jpg")]));
    assert!(
        e.contains("other.db") && e.to_lowercase().contains("embedder"),
        "{e}"
    );
}

/// SIGKILL a real `faces enroll` at random moments: the gallery always opens, passes SQLite's
/// integrity check, and holds either the people before or the people after, never a part.
#[test]
fn a_kill_during_enrollment_leaves_the_old_or_the_new_gallery() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("faces.db");
    ok(&faces(
        &g,
        &["enroll", "--name", "obama", &photo("facerec-obama.jpg")],
    ));
    let photos = [
        photo("facerec-biden.jpg"),
        photo("facerec-obama2.jpg"),
        photo("facerec-obama3.jpg"),
        photo("dlib-Tom_Cruise_avp_2014_4.jpg"),
    ];
    let (mut old, mut new) = (0, 0);
    for round in 0..24u64 {
        let name = format!("p{round}");
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_edgesight"));
        cmd.args([
            "faces",
            "--gallery",
            g.to_str().unwrap(),
            "enroll",
            "--name",
            &name,
            "--largest",
        ])
        .args(&photos)
        .current_dir(common::root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(fastrand::u64(50..900)));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let c = rusqlite::Connection::open(&g).unwrap();
        let check: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok", "round {round}");
        let rows: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM embeddings e JOIN persons p ON p.id = e.person_id WHERE p.name = ?1",
                [&name],
                |r| r.get(0),
            )
            .unwrap();
        match rows {
            0 => old += 1,
            4 => new += 1,
            n => panic!("round {round}: {name} half-enrolled with {n} of 4 faces"),
        }
        drop(c);
        assert!(listed(&g).iter().any(|p| p.0 == "obama"));
    }
    // The kills landed on both sides of the commit.
    assert!(
        old > 0 && new > 0,
        "old {old}, new {new}: adjust the kill times"
    );
}

/// The face of a photo turned by a known angle comes out of alignment upright: its landmarks
/// turn with the photo, and its aligned crop gives the same embedding as the upright photo's.
#[test]
fn a_rotated_face_comes_out_upright() {
    use edgesight::faces::FaceModels;
    use edgesight::models::Manifest;
    let dir = tempfile::tempdir().unwrap();
    let upright = photo("facerec-obama.jpg");
    let turned = image(
        dir.path(),
        "turned.jpg",
        &format!("filesrc location={upright} ! jpegdec ! videoconvert ! rotate angle=0.5 ! videoconvert ! jpegenc ! filesink location=OUT"),
    );
    let mut models = FaceModels::load(
        &Manifest::find("blazeface").unwrap(),
        &Manifest::find("mobilefacenet").unwrap(),
        &Default::default(),
    )
    .unwrap();
    let mut face_of = |p: &Path| {
        let frame = common::first_rgb_frame(p);
        let mut f = models.faces(&frame).unwrap();
        assert_eq!(f.len(), 1, "{}", p.display());
        f.remove(0)
    };
    let a = face_of(Path::new(&upright));
    let b = face_of(&turned);
    let tilt = |f: &edgesight::faces::Face| {
        let (l, r) = f.landmarks.eyes();
        (r[1] - l[1]).atan2(r[0] - l[0])
    };
    // GStreamer's rotate turns the picture by 0.5 rad (about 29°) clockwise on screen.
    let turned_by = (tilt(&b) - tilt(&a)).abs();
    assert!(
        (turned_by - 0.5).abs() < 0.08,
        "the eye line turned by {turned_by} rad"
    );
    let s = edgesight::faces::gallery::similarity(&a.embedding, &b.embedding);
    assert!(s > 0.9, "aligned crops differ: {s}");
}

/// The INT8 embedder that `optimize` makes works with `--model-dir`: it tells Obama from Biden,
/// and a gallery made with the FP32 embedder is refused by it (another embedder) rather than
/// compared.
#[test]
fn the_int8_embedder_artifact_recognises_and_keeps_its_own_gallery() {
    let dir = tempfile::tempdir().unwrap();
    let art = dir.path().join("mobilefacenet-int8");
    let model = common::root().join("models/cache/mobilefacenet.onnx");
    ok(&edgesight(&[
        "optimize",
        model.to_str().unwrap(),
        "--runs",
        "3",
        "--out",
        art.to_str().unwrap(),
    ]));
    let a = art.to_str().unwrap();
    let g8 = dir.path().join("int8.db");
    let int8 = |args: &[&str]| {
        let mut all = vec!["faces", "--model-dir", a, "--gallery", g8.to_str().unwrap()];
        all.extend_from_slice(args);
        edgesight(&all)
    };
    let v: serde_json::Value = serde_json::from_str(&ok(&int8(&[
        "verify",
        "--json",
        &photo("facerec-obama.jpg"),
        &photo("facerec-obama2.jpg"),
    ])))
    .unwrap();
    assert_eq!(v["same"], true, "{v}");
    let v: serde_json::Value = serde_json::from_str(&ok(&int8(&[
        "verify",
        "--json",
        &photo("facerec-obama.jpg"),
        &photo("facerec-biden.jpg"),
    ])))
    .unwrap();
    assert_eq!(v["same"], false, "{v}");
    ok(&int8(&[
        "enroll",
        "--name",
        "obama",
        &photo("facerec-obama3.jpg"),
    ]));
    let out = ok(&int8(&["identify", &photo("facerec-obama2.jpg")]));
    assert!(out.contains("\tobama\t"), "{out}");
    // The FP32 gallery is another embedder's.
    let g32 = dir.path().join("fp32.db");
    ok(&faces(
        &g32,
        &["enroll", "--name", "obama", &photo("facerec-obama3.jpg")],
    ));
    let o = edgesight(&[
        "faces",
        "--model-dir",
        a,
        "--gallery",
        g32.to_str().unwrap(),
        "list",
    ]);
    let e = error_line(&o);
    assert!(
        e.contains("fp32.db") && e.to_lowercase().contains("embedder"),
        "{e}"
    );
}
