"""Builders for MovieLens-layout zips and a local HTTP server that misbehaves on request.

Other data tests import these; the tests here check the builders and the server themselves.
"""

from __future__ import annotations

import hashlib
import http.client
import http.server
import io
import threading
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

MOVIES_DAT = [
    "1::Toy Story (1995)::Adventure|Animation|Children|Comedy|Fantasy",
    "2::Jumanji (1995)::Adventure|Children|Fantasy",
    "3::Grumpier Old Men (1995)::Comedy|Romance",
    "4::Waiting to Exhale (1995)::Comedy|Drama|Romance",
]
TAGS_DAT = [
    "15::4::skipped by the reader::1215184630",  # line 1 of tags.dat is skipped, as the reference reader skips it
    "20::1::Pixar animation::1188263867",
    "20::1::pixar::1188263868",
    "21::3::Dying Sky::1188263869",
    "22::1::this was the best!::1188263870",
]
# user, movie, rating, timestamp: users appear in the order 10, 7, 30; movies in the order 2, 1, 3
RATINGS = [(10, 2, 4.0, 100), (10, 1, 3.5, 101), (7, 1, 5.0, 102), (7, 3, 1.0, 103), (30, 2, 2.5, 104)]


def make_zip(members: dict[str, bytes | str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            zf.writestr(name, content.encode("latin-1") if isinstance(content, str) else content)
    return buffer.getvalue()


def ml10m_members(ratings=RATINGS, movies=MOVIES_DAT, tags=TAGS_DAT, folder="ml-10M100K") -> dict[str, str]:
    members = {f"{folder}/ratings.dat": "".join(f"{u}::{i}::{r:g}::{t}\n" for u, i, r, t in ratings),
               f"{folder}/movies.dat": "\n".join(movies) + "\n"}
    if tags is not None:
        members[f"{folder}/tags.dat"] = "\n".join(tags) + "\n"
    return members


def ml100k_members(ratings=RATINGS) -> dict[str, str]:
    genres = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
              "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]
    items = []
    for movie, title, flags in ((1, "Toy Story (1995)", {3, 4, 5}), (2, "GoldenEye (1995)", {1, 2, 16}),
                                (3, "Four Rooms (1995)", {16}), (4, "unknown", {0})):
        items.append("|".join([str(movie), title, "01-Jan-1995", "", ""] + ["1" if g in flags else "0" for g in range(19)]))
    return {"ml-100k/u.data": "".join(f"{u}\t{i}\t{int(r)}\t{t}\n" for u, i, r, t in ratings),
            "ml-100k/u.item": "\n".join(items) + "\n",
            "ml-100k/u.genre": "".join(f"{g}|{k}\n" for k, g in enumerate(genres)) + "\n"}


def csv_members(folder="ml-latest-small", ratings=RATINGS) -> dict[str, str]:
    return {f"{folder}/ratings.csv": "userId,movieId,rating,timestamp\n"
                                     + "".join(f"{u},{i},{r:g},{t}\n" for u, i, r, t in ratings),
            f"{folder}/movies.csv": 'movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n'
                                    '2,"Jumanji, The (1995)",Adventure|Children\n3,Heat (1995),Action\n',
            f"{folder}/tags.csv": 'userId,movieId,tag,timestamp\n5,1,"funny, pixar",1\n6,2,Funny,2\n'}


def generated_ratings(n_users: int, movie_ids: list[str], per_user: int, seed: int = 0) -> list[tuple]:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, n_users + 1):
        for m in rng.choice(movie_ids, size=per_user, replace=False):
            rows.append((u, int(m), float(rng.integers(1, 11)) / 2, 1_000_000_000 + int(rng.integers(0, 10**8))))
    return rows


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# -- a local HTTP server -----------------------------------------------------------------------------

@dataclass
class Route:
    body: bytes
    status: int = 200
    drop_after: int | None = None  # close the connection after this many bytes ...
    drops: int = 0  # ... this many times
    ranges: bool = True  # honour Range requests


@dataclass
class FileServer:
    base_url: str
    routes: dict[str, Route]
    requests: list[tuple[str, str | None]] = field(default_factory=list)

    def add(self, path: str, body: bytes, **kwargs) -> str:
        self.routes[path] = Route(body, **kwargs)
        return self.base_url + path


def _handler(server_state: FileServer):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output clean
            pass

        def do_GET(self):
            server_state.requests.append((self.path, self.headers.get("Range")))
            route = server_state.routes.get(self.path)
            if route is None or route.status != 200:
                status = 404 if route is None else route.status
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()
                return
            body, start = route.body, 0
            range_header = self.headers.get("Range")
            if range_header and route.ranges and range_header.startswith("bytes="):
                start = int(range_header[6:].split("-")[0])
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            payload = body[start:]
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Connection", "close")
            self.end_headers()
            if route.drops > 0 and route.drop_after is not None:
                route.drops -= 1
                self.wfile.write(payload[:route.drop_after])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(payload)

    return Handler


@pytest.fixture
def http_server():
    state = FileServer(base_url="", routes={})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def test_server_serves_ranges_and_drops(http_server):
    url = http_server.add("/f.zip", b"0123456789", drop_after=4, drops=1)
    with urllib.request.urlopen(url) as r, pytest.raises(http.client.IncompleteRead) as info:
        r.read()
    assert info.value.partial == b"0123"  # dropped after 4 bytes
    req = urllib.request.Request(url, headers={"Range": "bytes=4-"})
    with urllib.request.urlopen(req) as r:
        assert r.status == 206 and r.read() == b"456789"


def test_zip_builders_hold_the_expected_members():
    names = zipfile.ZipFile(io.BytesIO(make_zip(ml10m_members()))).namelist()
    assert names == ["ml-10M100K/ratings.dat", "ml-10M100K/movies.dat", "ml-10M100K/tags.dat"]
    assert Path(next(iter(ml100k_members()))).name == "u.data"
