"""Open-loop load generation against a running genrec (``python -m loadtest``).

schedule.py  when each request is due (constant or Poisson arrivals, stepped rates)
traffic.py   what each request is (the mix of users, paths and events)
runner.py    sends them on time over HTTP and records latency from the scheduled time
server.py    the server's CPU and RSS during the run
report.py    JSON, markdown and PNG summaries
main.py      the command line
"""
