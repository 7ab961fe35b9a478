//! A small aggregate to run through the adapter: a bank account that opens once, takes
//! deposits and refuses withdrawals past its balance.

use std::sync::Arc;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BankAccountCommand {
    Open { account_id: String },
    Deposit { amount: u64 },
    Withdraw { amount: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BankAccountEvent {
    Opened { account_id: String },
    Deposited { amount: u64, balance: u64 },
    Withdrew { amount: u64, balance: u64 },
}

impl DomainEvent for BankAccountEvent {
    fn event_type(&self) -> String {
        match self {
            BankAccountEvent::Opened { .. } => "Opened",
            BankAccountEvent::Deposited { .. } => "Deposited",
            BankAccountEvent::Withdrew { .. } => "Withdrew",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BankAccountError {
    #[error("the account is already open")]
    AlreadyOpen,
    #[error("the account is not open")]
    NotOpen,
    #[error("insufficient funds: balance {balance}, asked for {amount}")]
    InsufficientFunds { balance: u64, amount: u64 },
}

/// What command handling may call out to. `gate` lets a test hold two handlers of the same
/// account between loading and committing, to make them race.
#[derive(Debug, Clone, Default)]
pub struct BankServices {
    pub gate: Option<Arc<tokio::sync::Barrier>>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BankAccount {
    pub open: bool,
    pub balance: u64,
}

impl Aggregate for BankAccount {
    const TYPE: &'static str = "BankAccount";
    type Command = BankAccountCommand;
    type Event = BankAccountEvent;
    type Error = BankAccountError;
    type Services = BankServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if let Some(gate) = &services.gate {
            gate.wait().await;
        }
        match command {
            BankAccountCommand::Open { .. } if self.open => Err(BankAccountError::AlreadyOpen),
            BankAccountCommand::Open { account_id } => {
                sink.write(BankAccountEvent::Opened { account_id }, self).await;
                Ok(())
            }
            _ if !self.open => Err(BankAccountError::NotOpen),
            BankAccountCommand::Deposit { amount } => {
                let balance = self.balance + amount;
                sink.write(BankAccountEvent::Deposited { amount, balance }, self)
                    .await;
                Ok(())
            }
            BankAccountCommand::Withdraw { amount } if amount > self.balance => {
                Err(BankAccountError::InsufficientFunds {
                    balance: self.balance,
                    amount,
                })
            }
            BankAccountCommand::Withdraw { amount } => {
                let balance = self.balance - amount;
                sink.write(BankAccountEvent::Withdrew { amount, balance }, self)
                    .await;
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            BankAccountEvent::Opened { .. } => self.open = true,
            BankAccountEvent::Deposited { balance, .. } | BankAccountEvent::Withdrew { balance, .. } => {
                self.balance = balance;
            }
        }
    }
}
