"""Screenshot of an executed 05_ablation notebook as JupyterLab renders it (headless Chromium).

    .venv/bin/multiclust demo                       # writes out/synthetic.ipynb (executed 05_ablation)
    .venv/bin/python tools/lab_screenshot.py out/synthetic.ipynb figures/jupyterlab_05_ablation.png

Needs Debian's chromium (`apt-get install chromium`). JupyterLab serves a temporary folder holding a copy
of the notebook on loopback with a random token; nothing is sent anywhere else."""
import argparse, json, os, secrets, shutil, socket, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path

CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                  '--disable-background-networking', '--disable-component-update', '--disable-sync',
                  '--hide-scrollbars']


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('notebook'); ap.add_argument('png')
    ap.add_argument('--size', default='1600,1200'); ap.add_argument('--wait-ms', type=int, default=25000)
    ap.add_argument('--chromium', default=shutil.which('chromium') or '/usr/bin/chromium')
    a = ap.parse_args(argv)
    if not Path(a.chromium).exists():
        sys.exit(f"chromium not found at {a.chromium}: apt-get install chromium, or pass --chromium PATH")
    work = Path(tempfile.mkdtemp(prefix='multiclust-lab-'))      # settings and browser profile, not served
    tmp = work / 'served'; tmp.mkdir()
    shutil.copy(a.notebook, tmp / '05_ablation.ipynb')
    settings = work / 'settings' / '@jupyterlab' / 'apputils-extension'
    settings.mkdir(parents=True)
    (settings / 'notification.jupyterlab-settings').write_text(json.dumps({'fetchNews': 'false', 'checkForUpdates': False}))
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(work / 'settings'))
    lab = subprocess.Popen([sys.executable, '-m', 'jupyterlab', '--no-browser', '--allow-root', f'--port={port}',
                            '--ServerApp.ip=127.0.0.1', f'--IdentityProvider.token={token}',
                            f'--ServerApp.root_dir={tmp}'], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f'http://127.0.0.1:{port}/api/status?token={token}', timeout=2); break
            except Exception: time.sleep(0.5)
        else: sys.exit('JupyterLab did not start within 60 s')
        out = Path(a.png).resolve(); out.parent.mkdir(parents=True, exist_ok=True)
        url = f'http://127.0.0.1:{port}/lab/tree/05_ablation.ipynb?token={token}&reset'
        subprocess.run([a.chromium, *CHROMIUM_FLAGS, f'--user-data-dir={work / "chrome"}', f'--window-size={a.size}',
                        f'--virtual-time-budget={a.wait_ms}', f'--screenshot={out}', url],
                       check=True, timeout=180, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f'screenshot -> {out} ({out.stat().st_size} bytes)')
    finally:
        lab.terminate(); lab.wait(timeout=30); shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
