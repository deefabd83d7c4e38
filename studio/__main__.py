from studio.launch import main

main()
