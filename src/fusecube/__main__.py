from fusecube.cli import main

main()
