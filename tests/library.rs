//! The library as a user's own `main.rs` uses it: a Python app behind an Axum router,
//! served by `Server`, observed through its `ServerHandle`.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use rust_asgi_server::{PythonApp, RuntimeMode, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 request on a fresh connection; returns the raw response text.
async fn request(address: SocketAddr, method: &str, target: &str, body: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "{method} {target} HTTP/1.1\r\nhost: test\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

fn python_app() -> PythonApp {
    PythonApp::builder("pyapp.library_probe:app")
        .app_dir(env!("CARGO_MANIFEST_DIR"))
        .start()
        .expect("the probe app imports")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_routers_forward_the_full_original_path_to_python() {
    let python = python_app();
    let asgi = python.service();
    let v1 = Router::new()
        .route("/rust", get(|| async { "from rust" }))
        .fallback_service(asgi.clone());
    let api = Router::new().nest("/v1", v1).fallback_service(asgi.clone());
    let router = Router::new().nest("/api", api).fallback_service(asgi);
    let server = Server::new(router).bind("127.0.0.1:0");
    let handle = server.handle();
    let serving = tokio::spawn(server.serve(python));
    let address = handle.ready().await[0];

    let rust = request(address, "GET", "/api/v1/rust", "").await;
    assert!(rust.starts_with("HTTP/1.1 200"), "{rust}");
    assert!(rust.ends_with("from rust"), "{rust}");

    let depth_two = request(address, "POST", "/api/v1/users%20x?limit=5&q=a%20b", "hi").await;
    assert!(depth_two.contains("x-answered-by: python"), "{depth_two}");
    assert!(
        depth_two.contains(r#""path": "/api/v1/users x""#),
        "{depth_two}"
    );
    assert!(
        depth_two.contains(r#""raw_path": "/api/v1/users%20x""#),
        "{depth_two}"
    );
    assert!(
        depth_two.contains(r#""query_string": "limit=5&q=a%20b""#),
        "{depth_two}"
    );
    assert!(depth_two.contains(r#""root_path": """#), "{depth_two}");
    assert!(depth_two.contains(r#""body": "hi""#), "{depth_two}");

    let depth_one = request(address, "GET", "/api/other", "").await;
    assert!(depth_one.contains(r#""path": "/api/other""#), "{depth_one}");

    handle.shutdown();
    serving.await.unwrap().expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_resolves_only_after_lifespan_startup() {
    let python = python_app();
    let router = Router::new().fallback_service(python.service());
    let server = Server::new(router).bind("127.0.0.1:0");
    let handle = server.handle();
    let serving = tokio::spawn(server.serve(python));
    let address = handle.ready().await[0];

    let response = request(address, "GET", "/", "").await;
    assert!(response.contains(r#""started": true"#), "{response}");

    handle.shutdown();
    serving.await.unwrap().expect("clean shutdown");
}

#[tokio::test(flavor = "current_thread")]
async fn with_one_thread_rust_routes_and_python_share_the_loop_thread() {
    let python = PythonApp::builder("pyapp.library_probe:app")
        .app_dir(env!("CARGO_MANIFEST_DIR"))
        .runtime_mode(RuntimeMode::Single)
        .start()
        .expect("the probe app imports");
    let router = Router::new()
        .route(
            "/thread",
            get(|| async { std::thread::current().name().unwrap_or("?").to_owned() }),
        )
        .fallback_service(python.service());
    let server = Server::new(router).bind("127.0.0.1:0");
    let handle = server.handle();
    let serving = tokio::spawn(server.serve(python));
    let address = handle.ready().await[0];

    let rust = request(address, "GET", "/thread", "").await;
    assert!(rust.ends_with("asgi-loop"), "{rust}");
    let python = request(address, "POST", "/echo", "hi").await;
    assert!(python.contains(r#""body": "hi""#), "{python}");
    assert!(python.contains(r#""started": true"#), "{python}");

    handle.shutdown();
    serving.await.unwrap().expect("clean shutdown");
}
