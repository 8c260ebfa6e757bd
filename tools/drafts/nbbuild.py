"""Tiny helper: build a notebook from a python-ish source where cells are separated by lines
'# %% [markdown]' or '# %%'. Markdown cell lines are written without the leading '# '."""
import sys, nbformat, re
def build(src_path, out_path):
    text = open(src_path).read()
    parts = re.split(r'^# %%(.*)$', text, flags=re.M)
    cells = []
    # parts[0] is preamble (ignored), then (marker, body) pairs
    for marker, body in zip(parts[1::2], parts[2::2]):
        body = body.strip('\n')
        if 'markdown' in marker:
            lines = [l[2:] if l.startswith('# ') else (l[1:] if l.startswith('#') else l) for l in body.split('\n')]
            cells.append(nbformat.v4.new_markdown_cell('\n'.join(lines)))
        else:
            c = nbformat.v4.new_code_cell(body)
            if 'parameters' in marker: c.metadata['tags'] = ['parameters']
            cells.append(c)
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata = {"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}}
    nbformat.write(nb, out_path)
if __name__ == '__main__': build(sys.argv[1], sys.argv[2])
