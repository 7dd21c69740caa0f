from tradeul_maint.cli.main import main

main()
