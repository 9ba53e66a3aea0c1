"""Paper tables reproduced with one command (`python -m launch.reproduce`).

`tables` defines each table as data (rows: flagfile, overrides, seeds; columns: metrics; the
paper's numbers with their sources); `runs` lays the runs out on disk and tells how far each got;
`execute` trains and evaluates them side by side through `launch.train` and `launch.evaluate`;
`results` gathers the numbers into results/TABLE.json; `render` writes docs/results/TABLE.md and
docs/RESULTS.md from that JSON alone.
"""
