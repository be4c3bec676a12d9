from hotswap_cli.main import run

run()
