from cloudhpc.cli.main import run

run()
