from services.gateway.main import main

# Guarded: a worker process the gateway spawns imports this module again, and must not start a gateway.
if __name__ == "__main__":
    main()
