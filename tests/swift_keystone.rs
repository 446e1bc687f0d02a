//! The Swift backend with Keystone v3 authentication against a real Keystone and
//! Swift, started by `.ci/test` (`scripts/services/swift start --keystone`), which
//! writes the `env-keystone` output to the file named by CAIRN_TEST_KEYSTONE_ENV.
//! Without it these tests fail: they never skip.

mod common;

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// The OS_* variables (and admin extras) of the test Keystone.
fn keystone_env() -> HashMap<String, String> {
    let path = std::env::var("CAIRN_TEST_KEYSTONE_ENV").unwrap_or_default();
    assert!(
        !path.is_empty(),
        "CAIRN_TEST_KEYSTONE_ENV is not set: the Keystone tests need the test servers (run them through .ci/test)"
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect()
}

const CLEARED: [&str; 14] = [
    "ST_AUTH",
    "ST_USER",
    "ST_KEY",
    "OS_AUTH_URL",
    "OS_USERNAME",
    "OS_USER_ID",
    "OS_PASSWORD",
    "OS_PROJECT_NAME",
    "OS_PROJECT_ID",
    "OS_REGION_NAME",
    "OS_STORAGE_URL",
    "OS_AUTH_TOKEN",
    "OS_APPLICATION_CREDENTIAL_ID",
    "OS_APPLICATION_CREDENTIAL_SECRET",
];

fn as_ref<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, x)| (*k, x.as_str())).collect()
}

/// Runs cairn with exactly the given OpenStack variables.
fn cairn_with(env: &TestEnv, vars: &[(&str, &str)], args: &[&str]) -> Run {
    cairn_cmd(env, vars, args).run()
}

fn cairn_cmd(env: &TestEnv, vars: &[(&str, &str)], args: &[&str]) -> CairnCmd {
    let mut cmd = env.cmd(args);
    for v in CLEARED {
        cmd = cmd.env_remove(v);
    }
    for (k, v) in vars {
        cmd = cmd.env(k, v);
    }
    cmd
}

fn password_vars(ks: &HashMap<String, String>) -> Vec<(&'static str, String)> {
    [
        "OS_AUTH_URL",
        "OS_USERNAME",
        "OS_PASSWORD",
        "OS_PROJECT_NAME",
        "OS_USER_DOMAIN_NAME",
        "OS_PROJECT_DOMAIN_NAME",
        "OS_REGION_NAME",
        "OS_INTERFACE",
    ]
    .into_iter()
    .map(|k| (k, ks[k].clone()))
    .collect()
}

fn unique_container(tag: &str) -> String {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).unwrap();
    format!("cairn-ks-{tag}-{}", hex::encode(b))
}

/// A project-scoped token for demo, with the user's ID: (token, user id).
fn demo_token(ks: &HashMap<String, String>) -> (String, String) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let body = serde_json::json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": ks["OS_USERNAME"], "password": ks["OS_PASSWORD"], "domain": {"name": "Default"}}}},
            "scope": {"project": {"name": ks["OS_PROJECT_NAME"], "domain": {"name": "Default"}}}}});
        let r =
            reqwest::Client::new().post(format!("{}/auth/tokens", ks["OS_AUTH_URL"])).json(&body).send().await.unwrap();
        assert!(r.status().is_success(), "token: {}", r.status());
        let token = r.headers()["X-Subject-Token"].to_str().unwrap().to_string();
        let v: serde_json::Value = r.json().await.unwrap();
        (token, v["token"]["user"]["id"].as_str().unwrap().to_string())
    })
}

#[test]
fn keystone_password_auth_round_trip() {
    let ks = keystone_env();
    let env = TestEnv::new();
    let src = env.path("src");
    write(src.join("a.txt"), "a\n");
    write(src.join("d/b.bin"), Rng::new(3).bytes(200_000));
    let repo = format!("swift:{}:/r", unique_container("pw"));
    let vars = password_vars(&ks);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = |args: &[&str]| {
        let mut full = vec!["-r", repo.as_str()];
        full.extend_from_slice(args);
        cairn_with(&env, &vars, &full)
    };
    run(&["init", "--kdf-memory", "1024", "--kdf-iterations", "1"]).ok();
    run(&["backup", s(&src)]).ok();
    let target = env.path("out");
    run(&["restore", "latest", "--target", s(&target)]).ok();
    assert_same_tree(&src, &restored_path(&target, &src));
    run(&["check", "--read-data"]).ok();

    // The user-domain may be given by ID, the auth URL without /v3.
    let mut alt: Vec<(&str, &str)> = vars.iter().filter(|(k, _)| *k != "OS_USER_DOMAIN_NAME").copied().collect();
    let base = ks["OS_AUTH_URL"].trim_end_matches("/v3").to_string();
    alt.retain(|(k, _)| *k != "OS_AUTH_URL");
    alt.push(("OS_AUTH_URL", &base));
    alt.push(("OS_USER_DOMAIN_ID", "default"));
    cairn_with(&env, &alt, &["-r", &repo, "snapshots"]).ok();
}

#[test]
fn keystone_catalog_selection_and_bad_credentials() {
    let ks = keystone_env();
    let env = TestEnv::new();
    let repo = format!("swift:{}", unique_container("cat"));
    let vars = password_vars(&ks);
    let with = |k: &str, v: &str| -> Vec<(&str, String)> {
        vars.iter().map(|(n, x)| (*n, if *n == k { v.to_string() } else { x.clone() })).collect()
    };

    let r = cairn_with(&env, &as_ref(&with("OS_REGION_NAME", "Atlantis")), &["-r", &repo, "snapshots"]);
    r.expect_code(1);
    assert!(r.stderr.contains("no public object-store endpoint in region \"Atlantis\""), "{}", r.stderr);
    assert!(r.stderr.contains("RegionOne"), "the error lists the regions there are: {}", r.stderr);

    // The interface picks the endpoint (`publicURL`, the old spelling, is public).
    cairn_with(&env, &as_ref(&with("OS_INTERFACE", "publicURL")), &["-r", &repo, "snapshots"]).expect_code(10);
    let r = cairn_with(&env, &as_ref(&with("OS_INTERFACE", "nonexistent")), &["-r", &repo, "snapshots"]);
    r.expect_code(1);
    assert!(r.stderr.contains("no nonexistent object-store endpoint"), "{}", r.stderr);

    let r = cairn_with(&env, &as_ref(&with("OS_PASSWORD", "wrong-secret-123")), &["-r", &repo, "snapshots"]);
    r.expect_code(1);
    assert!(r.stderr.contains("access denied") && r.stderr.contains("requires authentication"), "{}", r.stderr);
    assert!(!r.stderr.contains("wrong-secret-123"), "the password leaked: {}", r.stderr);

    // Correct credentials, no container yet: no repository.
    cairn_with(&env, &as_ref(&vars), &["-r", &repo, "snapshots"]).expect_code(10);
}

#[test]
fn keystone_application_credential_and_premade_token() {
    let ks = keystone_env();
    let env = TestEnv::new();
    let (token, user_id) = demo_token(&ks);

    // An application credential made through Keystone's API.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (cred_id, secret) = rt.block_on(async {
        let name = unique_container("cred");
        let r = reqwest::Client::new()
            .post(format!("{}/users/{user_id}/application_credentials", ks["OS_AUTH_URL"]))
            .header("X-Auth-Token", &token)
            .json(&serde_json::json!({"application_credential": {"name": name}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "create application credential");
        let v: serde_json::Value = r.json().await.unwrap();
        let c = &v["application_credential"];
        (c["id"].as_str().unwrap().to_string(), c["secret"].as_str().unwrap().to_string())
    });
    let repo = format!("swift:{}", unique_container("app"));
    let app = [
        ("OS_AUTH_URL", ks["OS_AUTH_URL"].as_str()),
        ("OS_APPLICATION_CREDENTIAL_ID", cred_id.as_str()),
        ("OS_APPLICATION_CREDENTIAL_SECRET", secret.as_str()),
        ("OS_REGION_NAME", "RegionOne"),
    ];
    cairn_with(&env, &app, &["-r", &repo, "init", "--kdf-memory", "1024", "--kdf-iterations", "1"]).ok();
    let src = env.path("src");
    write(src.join("f"), "application credential\n");
    cairn_with(&env, &app, &["-r", &repo, "backup", s(&src)]).ok();

    // A pre-made token with its storage URL reads the same repository.
    let tok = [("OS_STORAGE_URL", ks["CAIRN_SWIFT_KS_STORAGE_URL"].as_str()), ("OS_AUTH_TOKEN", token.as_str())];
    let r = cairn_with(&env, &tok, &["-r", &repo, "snapshots", "--json"]);
    r.ok();
    assert_eq!(r.json().as_array().unwrap().len(), 1);

    // A wrong secret is refused with Keystone's reason, the secret never shown.
    let bad = [app[0], app[1], ("OS_APPLICATION_CREDENTIAL_SECRET", "nope-nope"), app[3]];
    let r = cairn_with(&env, &bad, &["-r", &repo, "snapshots"]);
    r.expect_code(1);
    assert!(!r.stderr.contains("nope-nope"));
}

/// A loopback TCP relay in front of Keystone that records every token Keystone
/// hands out (the `X-Subject-Token` reply header). Returns the relay's port.
fn token_spy(rt: &tokio::runtime::Runtime, upstream: u16, seen: Arc<Mutex<Vec<String>>>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else { return };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move { tokio::io::copy(&mut cr, &mut sw).await });
                let mut reply = Vec::new();
                let mut buf = vec![0u8; 16384];
                while let Ok(n) = sr.read(&mut buf).await {
                    if n == 0 || cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    reply.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&reply).to_string();
                    let tokens: Vec<String> = text
                        .lines()
                        .filter_map(|l| l.split_once(':'))
                        .filter(|(k, _)| k.eq_ignore_ascii_case("x-subject-token"))
                        .map(|(_, v)| v.trim().to_string())
                        .collect();
                    let mut seen = seen.lock().unwrap();
                    for t in tokens {
                        if !seen.contains(&t) {
                            seen.push(t);
                        }
                    }
                }
            });
        }
    });
    port
}

#[test]
fn keystone_token_revoked_mid_backup_is_renewed() {
    let ks = keystone_env();
    let env = TestEnv::new();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let auth_url = ks["OS_AUTH_URL"].clone();
    let upstream: u16 =
        auth_url.split(':').nth(2).and_then(|p| p.split('/').next()).and_then(|p| p.parse().ok()).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let spy = token_spy(&rt, upstream, Arc::clone(&seen));
    let spied_url = auth_url.replace(&format!(":{upstream}/"), &format!(":{spy}/"));
    let mut vars = password_vars(&ks);
    vars.retain(|(k, _)| *k != "OS_AUTH_URL");
    vars.push(("OS_AUTH_URL", spied_url));
    let vars = as_ref(&vars);
    let container = unique_container("revoke");
    let repo = format!("swift:{container}");
    let run = |args: &[&str]| {
        let mut full = vec!["-r", repo.as_str()];
        full.extend_from_slice(args);
        cairn_with(&env, &vars, &full)
    };
    run(&["init", "--kdf-memory", "1024", "--kdf-iterations", "1", "--chunk-size", "64K,256K,1M", "--pack-size", "1"])
        .ok();

    // A backup from a pipe that the test feeds: half the data, then the token is
    // revoked through Keystone's API, then the rest.
    let data = Rng::new(21).bytes(12 << 20);
    let mut child = cairn_cmd(&env, &vars, &["-r", &repo, "backup", "--stdin", "--stdin-filename", "data.bin"]).spawn();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&data[..6 << 20]).unwrap();
    stdin.flush().unwrap();

    // Wait until the backup holds a token and has stored packs with it.
    let (admin_token, _) = demo_token(&ks);
    let storage = ks["CAIRN_SWIFT_KS_STORAGE_URL"].clone();
    let client = reqwest::Client::new();
    let start = Instant::now();
    let packs = |token: &str| -> usize {
        rt.block_on(async {
            let r = client
                .get(format!("{storage}/{container}?format=json&prefix=data/"))
                .header("X-Auth-Token", token)
                .send()
                .await
                .unwrap();
            r.json::<Vec<serde_json::Value>>().await.map(|v| v.len()).unwrap_or(0)
        })
    };
    while packs(&admin_token) < 2 {
        assert!(start.elapsed() < Duration::from_secs(60), "the backup stored no packs");
        std::thread::sleep(Duration::from_millis(50));
    }
    let tokens = seen.lock().unwrap().clone();
    assert_eq!(tokens.len(), 2, "expected the init token and the backup's token: {}", tokens.len());
    let backup_token = tokens[1].clone();

    // Revoke it (a user may revoke their own tokens) and make sure Swift refuses it.
    rt.block_on(async {
        let r = client
            .delete(format!("{auth_url}/auth/tokens"))
            .header("X-Auth-Token", &admin_token)
            .header("X-Subject-Token", &backup_token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204, "revoke");
        let r =
            client.head(format!("{storage}/{container}")).header("X-Auth-Token", &backup_token).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "Swift still takes the revoked token");
    });

    stdin.write_all(&data[6 << 20..]).unwrap();
    drop(stdin);
    let r = finish(child);
    assert_eq!(r.code, 0, "the backup did not survive the revocation:\n{}", r.stderr);
    assert!(seen.lock().unwrap().len() >= 3, "the backup never authenticated again");

    // Everything landed: the data reads back whole.
    run(&["check", "--read-data"]).ok();
    let target = env.path("out");
    run(&["restore", "latest", "--target", s(&target)]).ok();
    assert!(std::fs::read(target.join("data.bin")).unwrap() == data, "restored bytes differ");
}
