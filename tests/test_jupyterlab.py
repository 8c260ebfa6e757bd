"""JupyterLab as users open it (README: `jupyter lab nbs/`): start it on loopback, open every notebook
through the REST API, and check each is served as a notebook whose kernel JupyterLab can start."""
import json, os, secrets, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest

REPO = Path(__file__).resolve().parents[1]
NBS = sorted((REPO / 'nbs').glob('*.ipynb'))

def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def _req(url, token, method='GET', body=None):
    r = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                               headers={'Authorization': f'token {token}', 'Content-Type': 'application/json'})
    with urllib.request.urlopen(r, timeout=30) as resp:
        data = resp.read()
        return json.loads(data) if data else None

@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    jupyter = Path(sys.executable).parent / 'jupyter'
    if not jupyter.exists(): pytest.skip('jupyter not installed in this environment (pip install -e ".[dev]")')
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path_factory.mktemp('rt')), JUPYTER_CONFIG_DIR=str(tmp_path_factory.mktemp('cfg')))
    proc = subprocess.Popen([str(jupyter), 'lab', '--no-browser', '--allow-root', '--ip=127.0.0.1', f'--port={port}',
                             f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={REPO}'],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)  # --allow-root: CI runs as root
    base = f'http://127.0.0.1:{port}'
    try:
        for _ in range(120):                      # up to 60 s to come up
            try: _req(f'{base}/api/status', token); break
            except Exception: time.sleep(0.5)
        else: pytest.fail('JupyterLab did not answer on loopback within 60 s')
        yield base, token
    finally:
        proc.terminate()
        try: proc.wait(20)
        except subprocess.TimeoutExpired: proc.kill()

def test_lab_ui_is_served(lab):
    base, token = lab
    r = urllib.request.Request(f'{base}/lab', headers={'Authorization': f'token {token}'})
    with urllib.request.urlopen(r, timeout=30) as resp:
        assert resp.status == 200 and b'JupyterLab' in resp.read()

def test_every_notebook_opens_with_its_kernel(lab):
    base, token = lab
    assert NBS, 'no notebooks found in nbs/'
    specs = _req(f'{base}/api/kernelspecs', token)['kernelspecs']
    for nb in NBS:
        m = _req(f'{base}/api/contents/nbs/{nb.name}?content=1', token)
        assert m['type'] == 'notebook' and m['content']['cells'], nb.name
        kname = m['content']['metadata'].get('kernelspec', {}).get('name', 'python3')
        assert kname in specs, f'{nb.name}: kernel {kname!r} not in {list(specs)}'

def _execute(base, token, kid, code, timeout=60):
    "Run `code` in kernel `kid` over JupyterLab's websocket (Jupyter messaging v5); returns its stdout text."
    import asyncio, uuid
    from tornado.websocket import websocket_connect
    async def go():
        ws = await websocket_connect(f"{base.replace('http', 'ws')}/api/kernels/{kid}/channels?token={token}")
        mid = uuid.uuid4().hex
        ws.write_message(json.dumps({'header': {'msg_id': mid, 'msg_type': 'execute_request', 'username': 'test',
                                                'session': uuid.uuid4().hex, 'version': '5.3'},
                                     'parent_header': {}, 'metadata': {}, 'channel': 'shell', 'buffers': [],
                                     'content': {'code': code, 'silent': False, 'store_history': False,
                                                 'user_expressions': {}, 'allow_stdin': False}}))
        out, status = [], None
        while status is None:
            m = json.loads(await asyncio.wait_for(ws.read_message(), timeout))
            if m.get('parent_header', {}).get('msg_id') != mid: continue
            if m['msg_type'] == 'stream': out.append(m['content']['text'])
            if m['msg_type'] == 'error': out.append('ERROR ' + m['content']['ename'] + ': ' + m['content']['evalue'])
            if m['msg_type'] == 'execute_reply': status = m['content']['status']
        ws.close()
        return status, ''.join(out)
    return asyncio.new_event_loop().run_until_complete(go())

def test_kernel_runs_code_for_a_notebook(lab):
    "Open 00_clip as JupyterLab does (a session with its kernel), run one line that imports the library, check its output."
    base, token = lab
    s = _req(f'{base}/api/sessions', token, 'POST', {'path': 'nbs/00_clip.ipynb', 'type': 'notebook',
                                                    'kernel': {'name': 'python3'}})
    try:
        status, out = _execute(base, token, s['kernel']['id'],
                               "import multiclust, multiclust.clip as c; print('ok', multiclust.__version__, c.Encoder.__name__, 6 * 7)")
        assert status == 'ok' and out.strip() == f"ok {__import__('multiclust').__version__} Encoder 42", out
        assert _req(f"{base}/api/kernels/{s['kernel']['id']}", token)['execution_state'] in ('idle', 'busy')
    finally:
        _req(f"{base}/api/sessions/{s['id']}", token, 'DELETE')
