"""The notebooks whose code reads the benchmark data root (`MULTICLUST_DATA` or the workplace's `../shared/data`):
what `tools/test.sh --data-free` executes again with an empty data root. Comments do not count."""
import json, re, sys
from pathlib import Path

PATTERN = re.compile(r"MULTICLUST_DATA|['\"]shared['\"]|shared/data")

def data_notebooks(nbs='nbs') -> list[str]:
    out = []
    for p in sorted(Path(nbs).glob('*.ipynb')):
        cells = json.loads(p.read_text())['cells']
        code = '\n'.join(re.sub(r'#.*', '', l) for c in cells if c['cell_type'] == 'code' for l in ''.join(c['source']).splitlines())
        if PATTERN.search(code): out.append(str(p))
    return out

if __name__ == '__main__':
    print('\n'.join(data_notebooks(sys.argv[1] if len(sys.argv) > 1 else 'nbs')))
