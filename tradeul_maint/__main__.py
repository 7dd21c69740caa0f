from tradeul_maint.cli import main

main()
