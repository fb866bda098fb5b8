from loadtest.main import main

main()
